(define base
  (build-machine
   (name "base.example.org")
   (systems (list "x86_64-linux"))
   (user "offload")
   (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1")
   (features (list "kvm"))))
(list base
      (build-machine
       (inherit base)
       (name "other.example.org")
       (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDqX8RrmUQcFBqaKAvDhYa83+Gy5B4c4w3Dwfo07WDut")
       (speed 2)))
