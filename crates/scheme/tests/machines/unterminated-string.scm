(list (build-machine (name "e)))
