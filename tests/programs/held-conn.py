#!/usr/bin/python3
"""Holds one connection to a redis server across a migration: sends PING,
creates the file READY, waits (up to 60 s) for the file GO, then sends each
remaining argument as an inline command and prints the replies, one per
line. Usage: held-conn.py HOST PORT READY GO COMMAND..."""
import os
import socket
import sys
import time

host, port, ready, go = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection((host, port), timeout=10)
f = s.makefile("rwb")


def ask(cmd):
    f.write(cmd.encode() + b"\r\n")
    f.flush()
    line = f.readline().decode().rstrip("\r\n")
    if line.startswith("$") and line != "$-1":
        line = f.readline().decode().rstrip("\r\n")
    return line


print(ask("PING"), flush=True)
open(ready, "w").close()
end = time.monotonic() + 60
while not os.path.exists(go):
    if time.monotonic() > end:
        sys.exit(1)
    time.sleep(0.05)
for cmd in sys.argv[5:]:
    print(ask(cmd), flush=True)
