;; A list generated with let and map, as people write for a farm.
(let ((key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1")
      (hosts '(("a1" . 4) ("a2" . 8) ("a3" . 16))))
  (map (lambda (host)
         (build-machine
          (name (string-append (car host) ".farm.example.org"))
          (systems (list "x86_64-linux"))
          (user "offload")
          (host-key key)
          (parallel-builds (cdr host))
          (speed (/ (cdr host) 4))))
       hosts))
