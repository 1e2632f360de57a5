# testlib-style checker: check.py INPUT OUTPUT ANSWER; exit 0 ok, 1 wrong answer, 3 failure
import sys
n = int(open(sys.argv[1]).read())
try:
    a, b = map(int, open(sys.argv[2]).read().split())
except ValueError:
    print("expected two integers", file=sys.stderr)
    sys.exit(1)
if a + b != n or a < 1 or b < 1:
    print(f"{a} + {b} != {n} (or not positive)", file=sys.stderr)
    sys.exit(1)
print("ok", file=sys.stderr)
