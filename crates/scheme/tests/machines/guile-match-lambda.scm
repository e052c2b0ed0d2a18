;; Guix house style: a table of hosts taken apart with match-lambda.
(use-modules (gnu) (guix) (ice-9 match) (srfi srfi-1) (srfi srfi-26))

(define %hosts
  '(("node1.lan" 4 "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1")
    ("node2.lan" 2 "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDF2Yb9pZ93InDDHqQXYsm3JUpM8XDVpWegXg0zuoFoB root@childhurd")))

(map (match-lambda
       ((name slots key)
        (build-machine
         (name name)
         (systems '("x86_64-linux"))
         (user "offload")
         (host-key key)
         (parallel-builds slots)
         ;; HOME is unset in this environment: and=> yields #f, no key.
         (private-key (and=> (getenv "HOME")
                             (cut string-append <> "/.ssh/id_ed25519"))))))
     %hosts)
