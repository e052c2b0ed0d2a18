;; An empty farm, written with list.
(list)
