;; As Guix's own tests write machines: the host keys are not real keys.
;; Guix loads such a file and fails only when it connects to a machine.
(list (build-machine
       (name "good.example.org")
       (systems (list "x86_64-linux"))
       (user "alice")
       (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1"))
      (build-machine
       (name "test1.example.org")
       (systems (list "x86_64-linux"))
       (user "alice")
       (host-key "some-key"))
      (build-machine
       (name "test2.example.org")
       (systems (list "aarch64-linux"))
       (user "bob")
       (host-key "ssh-ed25519 AAAAC3Nza…")))
