#!/usr/bin/python3
"""A client that keeps one connection to 127.0.0.1:PORT and sends a request
every INTERVAL seconds for DURATION seconds, checking that every request gets
its own reply, in order. Prints "ok REQUESTS FIRST LAST" (the server's first
and last count) or "error ..." and exits 1. With HOST the server is there
instead, and it must be this client's alone: its counts must follow each other
without a gap (no reply lost or repeated).
Usage: client.py PORT INTERVAL DURATION [HOST]"""
import socket
import sys
import time

port, interval, duration = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
host = sys.argv[4] if len(sys.argv) > 4 else "127.0.0.1"
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
        if len(parts) != 3 or parts[0] != "count" or parts[2] != f"req{i}":
            print(f"error: request {i} got {line!r}", flush=True)
            sys.exit(1)
        counts.append(int(parts[1]))
        time.sleep(interval)
except OSError as e:
    print(f"error: request {i}: {e}", flush=True)
    sys.exit(1)
if counts != sorted(counts) or len(set(counts)) != len(counts):
    print(f"error: counts out of order: {counts}", flush=True)
    sys.exit(1)
if len(sys.argv) > 4 and counts != list(range(counts[0], counts[0] + len(counts))):
    print(f"error: counts not consecutive: {counts}", flush=True)
    sys.exit(1)
print(f"ok {len(counts)} {counts[0]} {counts[-1]}", flush=True)
