(define all
  (map (lambda (n) (build-machine (name n) (systems (list "x86_64-linux")) (user "u") (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1")))
       '("eu-1" "us-1" "eu-2")))
(filter (lambda (m) #t) (filter (lambda (m) (build-machine? m)) all))
