;;; A C program compiled from sources with the host's compiler: one
;;; derivation per object file, one to link them.
;;;   ferry derivation add examples/c-program/build.scm
;;; Builders start with PATH=/path-not-set; the compiler finds its helpers
;;; (as, ld) through PATH, so it is set to the host's.
(define cc "/usr/bin/cc")
(define env '(("PATH" . "/usr/bin:/bin")))

;; The source directory, added to the store; its path in a string makes it
;; an input of the derivations that mention it.
(define src (local-file "src"))

(define (object name)
  (derivation (string-append name ".o")
    #:builder "/bin/sh"
    #:env env
    #:args (list "-c" (string-append cc " -O2 -c -o $out " src "/" name ".c"))))

(derivation "greet"
  #:builder "/bin/sh"
  #:env env
  #:args (list "-c"
               (string-append "/bin/mkdir -p $out/bin && " cc " -o $out/bin/greet "
                              (derivation-output (object "main")) " "
                              (derivation-output (object "greet")))))
