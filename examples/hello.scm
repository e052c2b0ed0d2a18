;;; The smallest build file: one derivation whose output is a file.
;;;   ferry derivation add examples/hello.scm
(derivation "hello"
  #:builder "/bin/sh"
  #:args '("-c" "echo 'Hello from Ferry!' > $out"))
