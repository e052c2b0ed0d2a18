(list (build-machine (inherit "base") (name "x")))
