(define common '("kvm"))
(list (build-machine (name "f") (systems (list "x86_64-linux")) (user "u")
                     (host-key "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBMyxhHM5hqYHZayTzVKooW0PvEwg9zbgDE4S2xNP6vBMvihqkEAhAo/g2QmX0Tf25pF1K9Pe3vnHtJ+CCWAzWBk=")
                     (features (append common (list "nvidia-gpu" "big-mem")))))
