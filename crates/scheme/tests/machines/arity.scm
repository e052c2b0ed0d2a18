(define (f a b) (list a b))
(f 1)
