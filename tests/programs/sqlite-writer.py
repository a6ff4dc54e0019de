#!/usr/bin/env python3
"""Inserts row n = 1, 2, ... into an SQLite database every 20 ms, printing
"row n". Before each insert it checks that the database holds exactly the
rows its memory says it wrote (ids 1..n-1): a database that is not as it was
at the program's checkpoint prints MISMATCH and exits 3.
usage: sqlite-writer.py DB [JOURNAL_MODE]"""
import sqlite3
import sys
import time

con = sqlite3.connect(sys.argv[1], isolation_level=None)
if len(sys.argv) > 2:
    con.execute("pragma journal_mode=" + sys.argv[2])
con.execute("create table if not exists t(i integer primary key, v integer)")
n = 0
while True:
    count, top = con.execute("select count(*), coalesce(max(i), 0) from t").fetchone()
    if count != n or top != n:
        print(f"MISMATCH: memory says {n} rows, the database holds {count} (max {top})",
              file=sys.stderr, flush=True)
        sys.exit(3)
    n += 1
    con.execute("insert into t(i, v) values(?, ?)", (n, n))
    print(f"row {n}", flush=True)
    time.sleep(0.02)
