;; /etc/guix/machines.scm as Guix System writes it (gnu/services/base.scm,
;; guix-machines-files-installation: a scheme-file of (append-map ... (list
;; ENTRY ...)), one line), with the hurd-vm service's childhurd entry and a
;; user's entry (a list of machines); the key file's name made relative.
((@ (srfi srfi-1) append-map) (lambda (entry) (if (build-machine? entry) (list entry) entry)) (list (build-machine (name "localhost") (port 10022) (systems (quote ("i586-gnu"))) (host-key (call-with-input-file "tests/machines/keys/childhurd/etc/ssh/ssh_host_ed25519_key.pub" (@ (ice-9 textual-ports) get-string-all))) (user "offloading") (overload-threshold 1.8) (private-key "/etc/guix/offload/ssh/childhurd")) (list (build-machine (name "build1.example.org") (systems (list "x86_64-linux")) (user "offload") (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1")))))
