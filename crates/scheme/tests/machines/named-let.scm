(let loop ((i 3) (acc '()))
  (if (zero? i)
      acc
      (loop (- i 1)
            (cons (build-machine (name (format #f "n~a" i)) (systems (list "x86_64-linux"))
                                 (user "u") (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDqX8RrmUQcFBqaKAvDhYa83+Gy5B4c4w3Dwfo07WDut"))
                  acc))))
