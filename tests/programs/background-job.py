#!/usr/bin/python3
"""Runs COMMAND as a background job of a terminal, as an interactive shell's
`COMMAND &` would: a pty with TOSTOP set whose session leader (this script's
child, standing in for the shell) is the foreground process group, COMMAND
in a process group of its own with the terminal as its stdin, stdout and
stderr. Writes COMMAND's PID to PIDFILE, copies what the terminal shows to
OUTFILE, and ends when COMMAND does or after SECONDS.
Usage: background-job.py PIDFILE OUTFILE SECONDS COMMAND [ARGS...]"""
import fcntl
import os
import pty
import select
import sys
import termios
import time

pidfile, outfile, seconds, argv = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]
master, slave = pty.openpty()
attrs = termios.tcgetattr(slave)
attrs[3] |= termios.TOSTOP
termios.tcsetattr(slave, termios.TCSANOW, attrs)

leader = os.fork()
if leader == 0:
    os.close(master)
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    job = os.fork()
    if job == 0:
        os.setpgid(0, 0)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        os.close(slave)
        os.execv(argv[0], argv)
    with open(pidfile + ".tmp", "w") as f:
        f.write(f"{job}\n")
    os.rename(pidfile + ".tmp", pidfile)
    os.waitpid(job, 0)
    os._exit(0)

os.close(slave)
deadline = time.monotonic() + seconds
with open(outfile, "ab", buffering=0) as out:
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            out.write(data)
        if os.waitpid(leader, os.WNOHANG)[0]:
            break
