;; Machines defined but not returned are never checked (as in Guix): not
;; their host key, not even the types of their fields.
(define retired
  (build-machine (name "retired.example.org") (systems (list "x86_64-linux"))
                 (user "u") (host-key "x") (port "twenty-two")))
(define spare
  (build-machine (inherit retired) (name "")))
(list (build-machine (name "live.example.org") (systems (list "x86_64-linux"))
                     (user "u") (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1")))
