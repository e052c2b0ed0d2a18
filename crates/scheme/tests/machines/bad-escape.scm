(list "a\qb")
