(list (build-machine
        (name "b1.example.org")
        (systems (list "x86_64-linux"))
        (user "offload")
        (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1")))
