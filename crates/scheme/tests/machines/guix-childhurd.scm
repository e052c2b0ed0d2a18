;; The form Guix System's hurd-vm service puts into /etc/guix/machines.scm
;; (gnu/services/virtualization.scm, hurd-vm-guix-extension), with the
;; key file's name made relative (the test runs in the crate's directory).
(list (build-machine
       (name "localhost")
       (port 10022)
       (systems '("i586-gnu"))
       (host-key (call-with-input-file "tests/machines/keys/childhurd/etc/ssh/ssh_host_ed25519_key.pub"
                   (@ (ice-9 textual-ports)
                      get-string-all)))
       (user "offloading")
       (overload-threshold 1.8) ;current load reporting is off by 1
       (private-key "/etc/guix/offload/ssh/childhurd")))
