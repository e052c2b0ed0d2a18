;; A do loop numbering machines, and string helpers.
(use-modules (srfi srfi-1))

(do ((i 1 (+ i 1))
     (acc '()
          (cons (build-machine
                 (name (string-append "node" (string-pad (number->string i) 2 #\0) ".lan"))
                 (systems (list "x86_64-linux"))
                 (user (let ((u "offload.x")) (substring u 0 (string-index u #\.))))
                 (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1"))
                acc)))
    ((> i 3) (reverse acc)))
