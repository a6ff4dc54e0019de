#!/usr/bin/python3
"""Writes TEXT into DIR/data and holds it open for reading and writing; once
the file DIR/go exists, links it as DIR/data.link too and unlinks the name
DIR/data: the fd is then on a file unlinked while open that has another hard
link. Once DIR/poke exists (each time it is made anew), writes "POKED" through
the fd at the file's start and removes DIR/poke. Prints, every 50 ms, a number
and what the fd reads from the file's start. With BIG, also holds the file
BIG open for writing, 300 KiB of it.
Usage: unlinked-holder.py DIR TEXT [BIG]"""
import itertools
import os
import sys
import time

d, text = sys.argv[1], sys.argv[2]
path = os.path.join(d, "data")
with open(path, "w") as f:
    f.write(text)
fd = os.open(path, os.O_RDWR)
if len(sys.argv) > 3:
    big = os.open(sys.argv[3], os.O_RDWR | os.O_CREAT, 0o600)
    os.pwrite(big, b"x" * 300 * 1024, 0)
for i in itertools.count(1):
    if os.path.exists(path) and os.path.exists(os.path.join(d, "go")):
        os.link(path, path + ".link")
        os.unlink(path)
        print("unlinked", flush=True)
    poke = os.path.join(d, "poke")
    if os.path.exists(poke):
        os.pwrite(fd, b"POKED", 0)
        os.unlink(poke)
    print(i, os.pread(fd, 4096, 0).decode(), flush=True)
    time.sleep(0.05)
