(list (format #f "build~a-~a" 1))
