#!/usr/bin/env python3
"""For scripts/bench --held-file: writes SIZE MiB of random bytes into PATH
and, with "hold", keeps it open for writing (a database's file, say); with
"nohold" closes it (the same program, its file not held). When PATH.cmd
appears holding "change K", rewrites K distinct 4 KiB blocks of the file
with random bytes, deletes PATH.cmd and prints "done N".
usage: bench-held-file.py PATH SIZE_MIB hold|nohold"""
import os
import random
import sys
import time

path, size, mode = sys.argv[1], int(sys.argv[2]) << 20, sys.argv[3]
BLOCK = 4096
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
for off in range(0, size, 1 << 20):
    os.pwrite(fd, os.urandom(min(1 << 20, size - off)), off)
if mode != "hold":
    os.close(fd)
print("ready", flush=True)
done = 0
while True:
    try:
        with open(path + ".cmd") as f:
            cmd = f.read().split()
    except FileNotFoundError:
        cmd = []
    if cmd and cmd[0] == "change":
        w = fd if mode == "hold" else os.open(path, os.O_WRONLY)
        for b in random.sample(range(size // BLOCK), int(cmd[1])):
            os.pwrite(w, os.urandom(BLOCK), b * BLOCK)
        if mode != "hold":
            os.close(w)
        os.unlink(path + ".cmd")
        done += 1
        print(f"done {done}", flush=True)
    time.sleep(0.02)
