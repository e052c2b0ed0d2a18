#| A block comment
   #| nested |#
   still a comment |#
;; The first machine is retired:
(list #;(build-machine (name "retired") (systems (list "x86_64-linux")) (user "u") (host-key "x"))
      (build-machine ; trailing comment
        (name "kept") #;(speed 100)
        (systems (list "x86_64-linux"))
        (user "u")
        (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1")))
