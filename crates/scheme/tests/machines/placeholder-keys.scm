(list (build-machine (name "p") (systems (list "x86_64-linux")) (user "u")
                     (host-key "ssh-ed25519 AAAAC3NzaC…mde+UhL hint@example.org")))
