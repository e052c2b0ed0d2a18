(use-modules (srfi srfi-1) (ice-9 format))
;; Five identical builders, build1 ... build5.
(map (lambda (n)
       (build-machine
        (name (format #f "build~a.example.org" n))
        (systems (list "x86_64-linux"))
        (user "offload")
        (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDqX8RrmUQcFBqaKAvDhYa83+Gy5B4c4w3Dwfo07WDut")
        (parallel-builds n)))
     (iota 5 1))
