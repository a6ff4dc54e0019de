#!/usr/bin/env python3
"""Rewrites a state file every 20 ms, printing "step n", in one of three
ways; its size changes at each step. Before each step it checks, through the
fd it holds open for writing, that the file holds what it last wrote: a file
that is not as it was at the program's checkpoint prints MISMATCH and exits 3.
  inplace   writes over the start of the file (it only grows)
  truncate  truncates it to nothing, then writes
  rename    writes a new version beside it, renames it over the file and
            reopens it
With GROW_FILE given, each step adds 64 KiB while that file exists.
$STATE_WRITER_PAUSE: seconds between steps (default 0.02);
$STATE_WRITER_PRINT_EVERY: print every Nth step only (default 1), so that a
full pipe to a busy supervisor does not hold the program still.
usage: state-writer.py MODE PATH [GROW_FILE]"""
import os
import sys
import time

mode, path = sys.argv[1], sys.argv[2]
grow = sys.argv[3] if len(sys.argv) > 3 else None
pause = float(os.environ.get("STATE_WRITER_PAUSE", "0.02"))
every = int(os.environ.get("STATE_WRITER_PRINT_EVERY", "1"))
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
last = b""
extra = 0
n = 0
while True:
    size = os.fstat(fd).st_size
    have = os.pread(fd, size + 1, 0)
    if have != last:
        print(f"MISMATCH at step {n}: the file holds {len(have)} bytes, "
              f"{len(last)} were written", file=sys.stderr, flush=True)
        sys.exit(3)
    n += 1
    if grow and os.path.exists(grow):
        extra += 65536
    data = (f"step {n}\n" * (n if mode == "inplace" else n % 7 + 1)).encode() + b"x" * extra
    if mode == "inplace":
        os.pwrite(fd, data, 0)
        last = data + last[len(data):]
    elif mode == "truncate":
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        last = data
    else:
        tmp = path + ".new"
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, path)
        os.close(fd)
        fd = os.open(path, os.O_RDWR)
        last = data
    if n % every == 0:
        print(f"step {n}", flush=True)
    if pause:
        time.sleep(pause)
