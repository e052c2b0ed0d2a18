(define key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDqX8RrmUQcFBqaKAvDhYa83+Gy5B4c4w3Dwfo07WDut")
(define extra
  (list (build-machine (name "q2") (systems `("x86_64-linux" ,(string-append "i686" "-linux")))
                       (user "u") (host-key key))))
`(,(build-machine (name "q1") (systems '("aarch64-linux")) (user "u") (host-key key))
  ,@extra)
