;;; A DAG of 41 derivations: 5 layers of 8, each node depending on two nodes
;;; of the layer below, and one root collecting the top layer.
;;;   ferry derivation add examples/dag.scm
(use-modules (srfi srfi-1))

(define width 8)
(define depth 5)

;; Builders start with PATH=/path-not-set: name the host's tools.
(define env '(("PATH" . "/bin:/usr/bin")))

(define (node layer i inputs)
  (derivation (string-append "dag-" (number->string layer) "-" (number->string i))
    #:builder "/bin/sh"
    #:env env
    #:args (list "-c"
                 (string-append
                  "{ echo layer " (number->string layer) " node " (number->string i) "; "
                  (apply string-append
                         (map (lambda (d) (string-append "cat " (derivation-output d) "; "))
                              inputs))
                  "} > $out"))))

;; Layer 0 has no inputs; layer n uses nodes i and i+1 (mod width) of layer n-1.
(define (layers)
  (let loop ((layer 0) (below '()) (acc '()))
    (if (= layer depth)
        below
        (let ((this (map (lambda (i)
                           (node layer i
                                 (if (null? below)
                                     '()
                                     (list (list-ref below i)
                                           (list-ref below (modulo (+ i 1) width))))))
                         (iota width))))
          (loop (+ layer 1) this (cons this acc))))))

(derivation "dag-root"
  #:builder "/bin/sh"
  #:env env
  #:args (list "-c"
               (string-append
                "for f in "
                (string-join (map derivation-output (layers)) " ")
                "; do wc -l < $f; done > $out")))
