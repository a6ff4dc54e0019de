#!/usr/bin/env python3
"""Holds PATH open for writing (SIZE KiB of random blocks at start) and keeps
in its memory what the file must hold. Every 20 ms it checks the file against
that, through its fd: a file not as it was at the program's checkpoint prints
MISMATCH and exits 3. It changes the file only when told, by a command
written into PATH.cmd, which it deletes once done, printing "done N CMD":
  change K   rewrites K distinct blocks (4 KiB) with random bytes, and prints
             "changed B" with the first 32 hex digits of one of them
  truncate K cuts the file to K KiB
  grow K     adds K KiB of random bytes at its end
  rename     writes a new version (the same bytes, one block changed) beside
             it, renames it over the file and reopens it
usage: block-writer.py PATH SIZE_KIB"""
import os
import random
import sys
import time

path, size = sys.argv[1], int(sys.argv[2]) * 1024
BLOCK = 4096
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
want = bytearray(os.urandom(size))
os.pwrite(fd, want, 0)
done = 0


def check():
    have = os.pread(fd, len(want) + 1, 0)
    if have != want:
        print(f"MISMATCH after command {done}: the file holds {len(have)} bytes, "
              f"{len(want)} were written", file=sys.stderr, flush=True)
        sys.exit(3)


def run(cmd):
    global fd, want
    words = cmd.split()
    if words[0] == "change":
        blocks = len(want) // BLOCK
        picked = random.sample(range(blocks), min(int(words[1]), blocks))
        for b in picked:
            data = os.urandom(BLOCK)
            want[b * BLOCK:(b + 1) * BLOCK] = data
            os.pwrite(fd, data, b * BLOCK)
        print(f"changed {want[picked[0] * BLOCK:picked[0] * BLOCK + 16].hex()}", flush=True)
    elif words[0] == "truncate":
        want = want[:int(words[1]) * 1024]
        os.ftruncate(fd, len(want))
    elif words[0] == "grow":
        data = os.urandom(int(words[1]) * 1024)
        os.pwrite(fd, data, len(want))
        want += data
    elif words[0] == "rename":
        want[0:BLOCK] = os.urandom(BLOCK)
        tmp = path + ".new"
        with open(tmp, "wb") as f:
            f.write(want)
        os.rename(tmp, path)
        os.close(fd)
        fd = os.open(path, os.O_RDWR)


print("ready", flush=True)
while True:
    check()
    try:
        with open(path + ".cmd") as f:
            cmd = f.read().strip()
    except FileNotFoundError:
        cmd = ""
    if cmd:
        run(cmd)
        done += 1
        os.unlink(path + ".cmd")
        print(f"done {done} {cmd}", flush=True)
    time.sleep(0.02)
