(define machines '())
(machines)
