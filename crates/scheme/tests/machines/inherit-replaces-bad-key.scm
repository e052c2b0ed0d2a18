;; Inheriting from a record with a placeholder key: the error follows the
;; field, so a record that gives its own key has none.
(define template
  (build-machine (name "template") (systems (list "x86_64-linux")) (user "u")
                 (host-key "ssh-ed25519 AAAAC3Nza…")))
(list (build-machine (inherit template) (name "fixed.example.org")
                     (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1"))
      (build-machine (inherit template) (name "still-placeholder.example.org")))
