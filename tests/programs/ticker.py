#!/usr/bin/python3
"""An unmodified program: prints 1, 2, 3, ... every INTERVAL seconds and keeps
the count in memory only. Usage: ticker.py [INTERVAL]"""
import itertools
import sys
import time

interval = float(sys.argv[1]) if len(sys.argv) > 1 else 0.05
for i in itertools.count(1):
    print(i, flush=True)
    time.sleep(interval)
