(list (build-machine (name "nolimit") (systems (list "x86_64-linux")) (user "u")
                     (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1") (overload-threshold #f))
      (build-machine (name "limit") (systems (list "x86_64-linux")) (user "u")
                     (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1") (overload-threshold 1)))
