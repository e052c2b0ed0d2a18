(define hosts
  '(("alpha" "x86_64-linux" "i686-linux")
    ("beta" "aarch64-linux")))
(map (lambda (entry)
       (build-machine (name (car entry)) (systems (cdr entry)) (user "u") (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1")
                      (parallel-builds (length (cdr entry)))))
     (list (assoc "beta" hosts) (assoc "alpha" hosts)))
