import sys
line = b"y" * 65536
for _ in range(100000):
    sys.stdout.buffer.write(line)
