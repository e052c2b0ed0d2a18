;; receive, let-values, partition, cut and gethostname: never offload to
;; the machine this file is evaluated on, fast machines first.
(use-modules (ice-9 match) (ice-9 receive) (srfi srfi-1) (srfi srfi-11)
             (srfi srfi-26))

(define %hosts
  ;; (name speed)
  '(("localhost" 9.0) ("fast.lan" 2.5) ("slow.lan" 0.5) ("quick.lan" 3.0)))

(define (machine name speed)
  (build-machine
   (name name)
   (systems (list "x86_64-linux"))
   (user (or (getenv "FERRY_USER") "offload"))
   (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDF2Yb9pZ93InDDHqQXYsm3JUpM8XDVpWegXg0zuoFoB root@childhurd")
   (speed speed)
   (parallel-builds (min (string->number (getenv "FERRY_COUNT"))
                         (current-processor-count)))))

(define others
  (remove (compose (cut string=? <> (gethostname)) car) %hosts))

(receive (fast slow)
    (partition (match-lambda ((_ speed) (>= speed 1.0))) others)
  (let-values (((names) (map car fast))
               ((rest) (values slow)))
    (append (map (cute apply machine <>) fast)
            (map (match-lambda ((name speed) (machine name speed))) rest))))
