(define (depth n) (+ 1 (depth (+ n 1))))
(list (depth 0))
