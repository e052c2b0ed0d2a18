;; nothing here
