"""Writes N numbered lines of 100 bytes to stdout, one write(2) per line (as
console.log does on a pipe), then records its finish time and sleeps.

Usage: log_writer.py N DONE_FILE
Line n (1-based): "%09d " % n, then 89 copies of one letter chosen by n, "\n".
"""
import os
import sys
import time

n = int(sys.argv[1])
done = sys.argv[2]
letters = [(chr(97 + i) * 89).encode() for i in range(26)]
write = os.write
for i in range(1, n + 1):
    write(1, b"%09d %s\n" % (i, letters[i % 26]))
with open(done + ".tmp", "w") as f:
    f.write("%.6f\n" % time.time())
os.rename(done + ".tmp", done)
while True:
    time.sleep(100000)
