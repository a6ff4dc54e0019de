#!/usr/bin/python3
"""Connects N clients to the unix socket PATH that say nothing, prints
"connected" and holds them for at most SECONDS. Usage: idle-clients.py PATH N SECONDS"""
import socket
import sys
import time

path, n, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
held = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    held.append(s)
print("connected", flush=True)
time.sleep(seconds)
