print("hello, " + input() + " ")
