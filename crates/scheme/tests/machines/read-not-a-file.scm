;; A directory, a device: refused (a FIFO would block the evaluation).
(call-with-input-file "/dev/null" get-string-all)
