#!/usr/bin/python3
"""Writes garbage to cryo's control socket (fd $CRYO_CONTROL_FD), reads the
supervisor's answer and prints its value, then does it again with a request
cut short by closing the socket. A well-behaved libcryo never does this."""
import os
import socket
import struct

fd = int(os.environ["CRYO_CONTROL_FD"])
s = socket.socket(fileno=fd)
s.sendall(b"x" * 24)
reply = s.recv(24, socket.MSG_WAITALL)
magic, kind, value, gen = struct.unpack("=IIqQ", reply)
print(f"reply magic={magic:#x} type={kind} value={value}", flush=True)
s.sendall(b"half")
s.close()
print("still running", flush=True)
