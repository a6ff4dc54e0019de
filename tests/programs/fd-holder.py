#!/usr/bin/python3
"""Prints a number every 50 ms; once the file GO exists, opens PATH
(read-only; "self" in it is /proc's own, so the kernel's /proc shows the
program's host PID) and keeps it open. Usage: fd-holder.py PATH GO"""
import itertools
import os
import sys
import time

path, go = sys.argv[1], sys.argv[2]
fd = None
for i in itertools.count(1):
    if fd is None and os.path.exists(go):
        fd = os.open(path, os.O_RDONLY)
        print(f"holding {os.readlink(f'/proc/self/fd/{fd}')} on fd {fd}", flush=True)
    print(i, flush=True)
    time.sleep(0.05)
