;; What Guix System's offload service writes.
((@ (srfi srfi-1) append-map)
 (lambda (entry)
   (if (build-machine? entry)
       (list entry)
       entry))
 (list (build-machine
        (name "g1")
        (systems (list "x86_64-linux"))
        (user "offload")
        (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1"))
       (list (build-machine
              (name "g2")
              (systems (list "aarch64-linux"))
              (user "offload")
              (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDqX8RrmUQcFBqaKAvDhYa83+Gy5B4c4w3Dwfo07WDut"))
             (build-machine
              (name "g3")
              (systems (list "armhf-linux"))
              (user "offload")
              (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDqX8RrmUQcFBqaKAvDhYa83+Gy5B4c4w3Dwfo07WDut")))))
