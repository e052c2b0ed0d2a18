(list (build-machine
        (name "e")
        (systems (list "x86_64-linux"))
        (user "u")))
