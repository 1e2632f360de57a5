lo, hi = 1, 1000
while True:
    mid = (lo + hi) // 2
    print("?", mid, flush=True)
    r = input().strip()
    if r == "=":
        print("!", mid, flush=True)
        break
    if r == "<":
        hi = mid - 1
    else:
        lo = mid + 1
