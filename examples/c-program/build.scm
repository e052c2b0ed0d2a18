;;; A C program compiled from sources with the host's compiler: one
;;; derivation per object file, one to link them.
;;;   ferry derivation add examples/c-program/build.scm
;;; Builders see PATH=/path-not-set, so tools are named by absolute path.
(define cc "/usr/bin/cc")

;; The source directory, added to the store; its path in a string makes it
;; an input of the derivations that mention it.
(define src (local-file "src"))

(define (object name)
  (derivation (string-append name ".o")
    #:builder "/bin/sh"
    #:args (list "-c" (string-append cc " -O2 -c -o $out " src "/" name ".c"))))

(derivation "greet"
  #:builder "/bin/sh"
  #:args (list "-c"
               (string-append "/bin/mkdir -p $out/bin && " cc " -o $out/bin/greet "
                              (derivation-output (object "main")) " "
                              (derivation-output (object "greet")))))
