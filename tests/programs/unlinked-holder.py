#!/usr/bin/python3
"""Writes TEXT into DIR/data and holds it open; once the file DIR/go exists,
links it as DIR/data.link too and unlinks the name DIR/data: the fd is then
on a file unlinked while open that has another hard link. Prints, every
50 ms, a number and what the fd reads from the file's start.
Usage: unlinked-holder.py DIR TEXT"""
import itertools
import os
import sys
import time

d, text = sys.argv[1], sys.argv[2]
path = os.path.join(d, "data")
with open(path, "w") as f:
    f.write(text)
fd = os.open(path, os.O_RDONLY)
for i in itertools.count(1):
    if os.path.exists(path) and os.path.exists(os.path.join(d, "go")):
        os.link(path, path + ".link")
        os.unlink(path)
        print("unlinked", flush=True)
    print(i, os.pread(fd, 4096, 0).decode(), flush=True)
    time.sleep(0.05)
