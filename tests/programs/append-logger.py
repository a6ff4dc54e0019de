#!/usr/bin/python3
"""Appends a numbered line to LOG (opened O_APPEND) every 50 ms and prints the
same number: the log grows after every checkpoint. Usage: append-logger.py LOG"""
import itertools
import sys
import time

with open(sys.argv[1], "a", buffering=1) as log:
    for i in itertools.count(1):
        log.write(f"line {i}\n")
        print(i, flush=True)
        time.sleep(0.05)
