(list (build-machine (name "nokey.example.org") (systems (list "x86_64-linux"))
                     (user "u") (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1") (private-key #f)))
