;; No build machines for now.
'()
