#!/usr/bin/python3
"""Reads its own /proc by its PID, as programs do that look at themselves
through getpid() rather than /proc/self. Takes a POSIX lock on LOCKFILE and
holds an fd on /proc/<getpid()>/maps; then prints, every 50 ms, a number and
what its /proc says of it:

    N pid=<getpid()> name=<Name: of /proc/<getpid()>/status>
      status=<its Pid:> lock=<the PID /proc/locks gives the lock's owner>
      fdinfo=<the owner's PID in the lock line of the lock fd's fdinfo>
      pidfd=<the Pid: in the fdinfo of a pidfd on itself>
      maps=<ok when the held fd reads the first line /proc/self/maps has>

(on one line). Under a PID namespace whose /proc is another's, the values
disagree: /proc/<getpid()> is another process, or none.
Usage: own-proc.py LOCKFILE"""
import fcntl
import itertools
import os
import sys
import time


def field(text, name):
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return "none"


def lock_owner(path):
    """The PID /proc/locks names as the owner of the POSIX lock on path."""
    st = os.stat(path)
    want = f":{st.st_ino}"
    with open("/proc/locks") as f:
        for line in f:
            words = line.split()
            # 1: POSIX  ADVISORY  WRITE PID MAJ:MIN:INODE START END
            if len(words) >= 6 and words[1] == "POSIX" and words[5].endswith(want):
                return words[4]
    return "none"


def fdinfo_field(fd, name):
    """A field of /proc/<getpid()>/fdinfo/fd; for "lock", the owner's PID."""
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            text = f.read()
    except OSError:
        return "none"
    if name == "lock":
        for line in text.splitlines():
            # lock:	1: POSIX  ADVISORY  WRITE PID MAJ:MIN:INODE START END
            words = line.split()
            if words[:1] == ["lock:"] and len(words) >= 6:
                return words[5]
        return "none"
    return field(text, name)


def first_line(data):
    return data.split(b"\n", 1)[0]


lockfile = sys.argv[1]
pid = os.getpid()
lk = open(lockfile, "w")
fcntl.lockf(lk, fcntl.LOCK_EX)
try:
    maps = os.open(f"/proc/{pid}/maps", os.O_RDONLY)
except OSError:
    maps = None
pidfd = os.pidfd_open(pid)
for i in itertools.count(1):
    try:
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
    except OSError:
        status = ""
    ok = "none"
    if maps is not None:
        with open("/proc/self/maps", "rb") as f:
            mine = first_line(f.read())
        held = first_line(os.pread(maps, 4096, 0))
        ok = "ok" if held and held == mine else "other"
    print(
        f"{i} pid={pid} name={field(status, 'Name')} status={field(status, 'Pid')} "
        f"lock={lock_owner(lockfile)} fdinfo={fdinfo_field(lk.fileno(), 'lock')} "
        f"pidfd={fdinfo_field(pidfd, 'Pid')} maps={ok}",
        flush=True,
    )
    time.sleep(0.05)
