(use-modules (ice-9 match))

(define %hosts
  '(("node1.lan" "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1")
    ("node2.lan")))                     ;the key is missing

(map (match-lambda
       ((name key)
        (build-machine (name name) (systems '("x86_64-linux"))
                       (user "offload") (host-key key))))
     %hosts)
