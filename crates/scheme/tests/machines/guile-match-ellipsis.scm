;; Groups of machines, each with its systems; ellipsis and predicate patterns.
(use-modules (ice-9 match) (srfi srfi-1))

(define %key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1")

(define %farm
  '((x86 ("x86_64-linux" "i686-linux")
         ("node1.lan" 4 "kvm" "big-memory")
         ("node2.lan" 2))
    (arm ("aarch64-linux")
         ("pi.lan" 1))
    (retired ())))

(define (group->machines group)
  (match group
    ((_ ()) '())                        ;no systems: skip the group
    (((? symbol? tag) (systems ..1) hosts ...)
     (map (match-lambda
            ((name (? integer? slots) features ...)
             (build-machine
              (name name)
              (systems systems)
              (user (symbol->string tag))
              (host-key %key)
              (parallel-builds slots)
              (features features))))
          hosts))))

(append-map group->machines %farm)
