#!/usr/bin/env python3
"""Inserts row n = 1, 2, ... into an SQLite database every 20 ms, printing
"row n", and answers each line a client sends on TCP port PORT with
"rows N REQUEST", N being the rows the database holds (read from it). Before each
insert it checks that the database holds exactly the rows its memory says it
wrote (ids 1..n-1): a database that is not as it was when the program was
frozen prints MISMATCH and exits 3. One thread, one epoll.
usage: sqlite-server.py DB PORT [JOURNAL_MODE]"""
import selectors
import socket
import sqlite3
import sys
import time

con = sqlite3.connect(sys.argv[1], isolation_level=None)
if len(sys.argv) > 3:
    con.execute("pragma journal_mode=" + sys.argv[3])
con.execute("create table if not exists t(i integer primary key, v integer)")
lsk = socket.create_server(("0.0.0.0", int(sys.argv[2])))
lsk.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(lsk, selectors.EVENT_READ)
pending = {}
print("listening", flush=True)
n = 0
due = time.monotonic()
while True:
    for key, _ in sel.select(max(0.0, due - time.monotonic())):
        if key.fileobj is lsk:
            try:
                c, _ = lsk.accept()
            except BlockingIOError:
                continue
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ)
            pending[c] = b""
            continue
        c = key.fileobj
        try:
            data = c.recv(4096)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            data = b""
        if not data:
            sel.unregister(c)
            del pending[c]
            c.close()
            continue
        pending[c] += data
        while b"\n" in pending[c]:
            line, pending[c] = pending[c].split(b"\n", 1)
            rows = con.execute("select count(*) from t").fetchone()[0]
            c.sendall(f"rows {rows} {line.decode().strip()}\n".encode())
    if time.monotonic() < due:
        continue
    count, top = con.execute("select count(*), coalesce(max(i), 0) from t").fetchone()
    if count != n or top != n:
        print(f"MISMATCH: memory says {n} rows, the database holds {count} (max {top})",
              file=sys.stderr, flush=True)
        sys.exit(3)
    n += 1
    con.execute("insert into t(i, v) values(?, ?)", (n, n))
    print(f"row {n}", flush=True)
    due = time.monotonic() + 0.02
