#!/usr/bin/env python3
"""A client of sqlite-server.py: keeps one connection to HOST:PORT and asks
for the row count every INTERVAL seconds for DURATION seconds, checking that
every request gets its own reply, in order, and that the count never goes
back. Prints "ok REQUESTS FIRST LAST" (the first and last count) or
"error ..." and exits 1.
usage: rows-client.py HOST PORT INTERVAL DURATION"""
import socket
import sys
import time

host, port = sys.argv[1], int(sys.argv[2])
interval, duration = float(sys.argv[3]), float(sys.argv[4])
s = socket.create_connection((host, port), timeout=10)
f = s.makefile("rwb")
counts = []
end = time.monotonic() + duration
i = 0
try:
    while time.monotonic() < end:
        i += 1
        f.write(f"req{i}\n".encode())
        f.flush()
        line = f.readline().decode()
        parts = line.split()
        if len(parts) != 3 or parts[0] != "rows" or parts[2] != f"req{i}":
            print(f"error: request {i} got {line!r}", flush=True)
            sys.exit(1)
        counts.append(int(parts[1]))
        time.sleep(interval)
except OSError as e:
    print(f"error: request {i}: {e}", flush=True)
    sys.exit(1)
if counts != sorted(counts):
    print(f"error: the row count went back: {counts}", flush=True)
    sys.exit(1)
print(f"ok {len(counts)} {counts[0]} {counts[-1]}", flush=True)
