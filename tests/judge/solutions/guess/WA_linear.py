x = 1
while True:
    print("?", x, flush=True)
    if input().strip() == "=":
        print("!", x, flush=True)
        break
    x += 1
