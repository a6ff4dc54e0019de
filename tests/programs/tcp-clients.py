#!/usr/bin/python3
"""N idle clients of asyncio-server.py at 127.0.0.1:PORT, held for at most
SECONDS. Each connects and asks once ("count N reqK" back); then it prints
"connected N". On SIGUSR1 every connection asks once more and it prints
"answered K of N" (K: the connections that got their own answer within
5 s). On SIGUSR2 it prints "ended K of N" (K: the connections whose peer
ended them, an EOF or a reset, within 10 s). Usage: tcp-clients.py PORT N SECONDS"""
import select
import signal
import socket
import sys
import time

port, n, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2})
held = []
asked = 0


def readable(socks, deadline):
    """The sockets of socks readable now or, if none, by deadline (poll: no
    limit on fd numbers)."""
    p = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        p.register(fd, select.POLLIN)
    ms = max(0, int((deadline - time.monotonic()) * 1000))
    return [by_fd[fd] for fd, _ in p.poll(ms)]


def ask_all(deadline):
    """Asks on every connection, then reads the answers; returns how many
    connections got their own."""
    global asked
    asked += 1
    want = {}
    for s in held:
        try:
            s.sendall(f"req{asked}\n".encode())
            want[s] = b""
        except OSError:
            pass
    good = 0
    while want and time.monotonic() < deadline:
        for s in readable(want, deadline):
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                del want[s]
                continue
            want[s] += data
            if want[s].endswith(b"\n"):
                parts = want[s].split()
                if len(parts) == 3 and parts[0] == b"count" and parts[2] == f"req{asked}".encode():
                    good += 1
                del want[s]
    return good


def ended_all(deadline):
    """How many connections see their end (EOF or an error) by deadline."""
    left = set(held)
    ended = 0
    while left and time.monotonic() < deadline:
        for s in readable(left, deadline):
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                ended += 1
                left.discard(s)
    return ended


for _ in range(n):
    held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
for s in held:
    s.setblocking(False)
got = ask_all(time.monotonic() + 30)
if got != n:
    print(f"error: {got} of {n} connections answered", flush=True)
    sys.exit(1)
print(f"connected {n}", flush=True)
end = time.monotonic() + seconds
while (left := end - time.monotonic()) > 0:
    info = signal.sigtimedwait({signal.SIGUSR1, signal.SIGUSR2}, left)
    if info is None:
        break
    if info.si_signo == signal.SIGUSR1:
        print(f"answered {ask_all(time.monotonic() + 5)} of {n}", flush=True)
    else:
        print(f"ended {ended_all(time.monotonic() + 10)} of {n}", flush=True)
