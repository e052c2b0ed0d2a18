(list (build-machine
       (name "both.example.org")
       (system "i686-linux")
       (systems (list "x86_64-linux" "i686-linux"))
       (user "u")
       (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1")))
