#!/usr/bin/python3
"""A man in the middle for one connection: listens on ADDR:PORT, forwards to
TARGET_ADDR:TARGET_PORT both ways, and damages the client-to-server stream:
"flip N" inverts its byte N, "cut N" drops both connections after N bytes
(as a target that dies mid-transfer), "kill N PID" SIGKILLs the children of
PID (cryo serve's, which serve the connection) after N bytes and forwards on.
Exits after that one connection or after 120 s.
Usage: mitm.py ADDR PORT TARGET_ADDR TARGET_PORT flip|cut|kill N [PID]"""
import os
import selectors
import signal
import socket
import sys
import time

addr, port, taddr, tport, mode, n = sys.argv[1:7]
port, tport, n = int(port), int(tport), int(n)
ls = socket.create_server((addr, port))
ls.settimeout(120)
print("listening", flush=True)
try:
    client, _ = ls.accept()
except socket.timeout:
    sys.exit(1)
server = socket.create_connection((taddr, tport), timeout=10)
sel = selectors.DefaultSelector()
sel.register(client, selectors.EVENT_READ, server)
sel.register(server, selectors.EVENT_READ, client)
seen = 0
open_sides = 2
deadline = time.monotonic() + 120
while time.monotonic() < deadline and open_sides:
    for key, _ in sel.select(timeout=1):
        src, dst = key.fileobj, key.data
        try:
            data = src.recv(65536)
        except OSError:
            sys.exit(0)
        if not data:
            # A half-close goes through as one.
            sel.unregister(src)
            dst.shutdown(socket.SHUT_WR)
            open_sides -= 1
            continue
        if src is client:
            if mode == "cut" and seen + len(data) > n:
                dst.sendall(data[: n - seen])
                print(f"cut after {n} bytes", flush=True)
                client.close()
                server.close()
                sys.exit(0)
            if mode == "kill" and seen <= n < seen + len(data):
                with open(f"/proc/{sys.argv[7]}/task/{sys.argv[7]}/children") as f:
                    for child in f.read().split():
                        os.kill(int(child), signal.SIGKILL)
                print(f"killed the target after {n} bytes", flush=True)
            if mode == "flip" and seen <= n < seen + len(data):
                b = bytearray(data)
                b[n - seen] ^= 0xFF
                data = bytes(b)
                print(f"flipped byte {n}", flush=True)
            seen += len(data)
        dst.sendall(data)
