;; Strings of the right type whose content cannot be a user or host name:
;; errors of those machines only.
(define key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1")
(define (m name user)
  (build-machine (name name) (user user) (host-key key)
                 (systems (list "x86_64-linux"))))
(list (m "ok.example.org" "offload")
      (m "empty-user.example.org" "")
      (m "spaced-user.example.org" "bob smith")
      (m "alice@at-in-name.example.org" "alice")
      (m "-oProxyCommand=evil" "u")
      (m "" "u"))
