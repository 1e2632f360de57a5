# interactor.py INPUT OUTPUT [ANSWER]: the secret is in INPUT; the solution asks "? x", we answer
# "<", ">" or "="; at most 20 questions.  exit 0 accepted, 1 wrong answer (testlib-style)
import sys
secret = int(open(sys.argv[1]).read())
for i in range(20):
    line = sys.stdin.readline()
    if not line:
        print("the solution stopped asking", file=sys.stderr)
        sys.exit(1)
    parts = line.split()
    if len(parts) != 2 or parts[0] not in "?!":
        print(f"bad line {line!r}", file=sys.stderr)
        sys.exit(1)
    x = int(parts[1])
    if parts[0] == "!":
        if x == secret:
            print(f"found in {i} questions", file=sys.stderr)
            sys.exit(0)
        print(f"answered {x}, the number was {secret}", file=sys.stderr)
        sys.exit(1)
    print("<" if secret < x else ">" if secret > x else "=", flush=True)
print("too many questions", file=sys.stderr)
sys.exit(1)
