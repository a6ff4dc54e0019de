#!/usr/bin/python3
"""Floods a cryo serve with slow unauthenticated connections: opens N
connections to ADDR:PORT, sends each the protocol's magic, then one more byte
a second on each while it stays open, for at most DURATION seconds. Prints
"refused R cut C open O held H": R closed by the serve within 5 s, C closed
later (cut at the handshake's deadline; H: the seconds the longest of them
was held), O still open at the end.
Usage: slow-flood.py ADDR PORT N DURATION"""
import selectors
import socket
import sys
import time

addr, port, n, duration = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
n = min(n, 1000)
duration = min(duration, 120)
sel = selectors.DefaultSelector()
start = {}
ended = {}
for i in range(n):
    s = socket.create_connection((addr, port), timeout=10)
    s.setblocking(False)
    start[s] = time.monotonic()
    try:
        s.send(b"CRYOMIG1")
    except OSError:
        ended[s] = time.monotonic()
        continue
    sel.register(s, selectors.EVENT_READ)
end = time.monotonic() + duration
next_byte = time.monotonic() + 1
while sel.get_map() and time.monotonic() < end:
    for key, _ in sel.select(timeout=0.2):
        s = key.fileobj
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if not data:
            ended[s] = time.monotonic()
            sel.unregister(s)
    if time.monotonic() >= next_byte:
        next_byte += 1
        for key in list(sel.get_map().values()):
            try:
                key.fileobj.send(b"x")
            except OSError:
                pass
held = [ended[s] - start[s] for s in ended]
refused = sum(1 for h in held if h < 5)
cut = [h for h in held if h >= 5]
print(f"refused {refused} cut {len(cut)} open {n - len(held)} held {max(cut, default=0):.0f}",
      flush=True)
