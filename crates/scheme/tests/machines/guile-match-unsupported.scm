(use-modules (ice-9 match))
(define (name-of m)
  (match m
    (($ <build-machine> name) name)))
(list)
