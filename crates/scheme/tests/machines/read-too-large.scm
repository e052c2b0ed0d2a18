(define big (call-with-input-file (string-append (getenv "KEYS") "/big") get-string-all))
'()
