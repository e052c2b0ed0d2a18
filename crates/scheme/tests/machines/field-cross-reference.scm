;; A field may use the fields written before it, as with Guix's records.
(define base
  (build-machine
   (name "base.example.org")
   (user "offload")
   (systems (list "x86_64-linux"))
   (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1")
   (private-key (string-append "/etc/ferry/keys/" name "-" user))
   (speed (if (string-prefix? "base" name) 2.0 1.0))))
(list base
      (build-machine
       (inherit base)
       (name "derived.example.org")
       (port 2222)
       (daemon-socket (string-append "/run/" name ":" (number->string port) "/socket"))))
