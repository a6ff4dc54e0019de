#!/usr/bin/python3
"""Opens each PATH for reading and writing (not O_APPEND), writes 8 KiB of
its own into it, prints "holding N files" and then a number every 50 ms,
holding them open. Usage: hold-files.py PATH..."""
import itertools
import os
import sys
import time

fds = []
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.pwrite(fd, (path + "\n").encode().ljust(8192, b"."), 0)
    fds.append(fd)
print(f"holding {len(fds)} files", flush=True)
for i in itertools.count(1):
    print(i, flush=True)
    time.sleep(0.05)
