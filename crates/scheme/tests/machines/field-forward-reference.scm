;; Only the fields written before are in scope (Guix binds them as let*).
(list (build-machine
       (private-key (string-append "/k/" name))
       (name "a")
       (user "u")
       (systems (list "x86_64-linux"))
       (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1")))
