#!/usr/bin/env python3
"""cryo's benchmark of many workloads on one machine: N small programs
(tests/programs/ticker.py, a python3 that prints a line a second; with MIB,
one that also holds MIB MiB of random bytes), each under
its own `cryo run --every 2s`, all started at once; after a warm-up, for
SECONDS: the checkpoints stored in all per second, and the interval each
workload actually got between two of its checkpoints (median over the
workloads of each one's median; and the worst workload's), against the 2 s
asked for. A checkpoint counts when its generation file is renamed into place
(its mtime: the archive is written, fsynced and renamed). Prints a markdown
table and writes OUT_DIR/workloads.json.
Usage: bench-workloads.py BUILD_DIR OUT_DIR N[,N...] REPS [MIB [SECONDS]]"""
import glob
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BUILD, OUT = sys.argv[1], sys.argv[2]
COUNTS = [int(n) for n in sys.argv[3].split(",")]
REPS = int(sys.argv[4])
MIB = int(sys.argv[5]) if len(sys.argv) > 5 else 0
SECONDS = float(sys.argv[6]) if len(sys.argv) > 6 else 20.0
CRYO = os.path.join(BUILD, "cryo")
TICKER = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "programs", "ticker.py")
EVERY = 2.0
WARMUP = 6.0
BALLAST = ("import os, time\nballast = os.urandom({} << 20)\n"
           "while True:\n    print(1, flush=True)\n    time.sleep(1)\n")


def gen_times(state, name):
    """The mtimes of workload name's generation files, in order."""
    return sorted(os.stat(p).st_mtime for p in glob.glob(os.path.join(state, name, "gen-*.cryo")))


def one_run(n):
    """n workloads for SECONDS: (checkpoints per second, each workload's
    median interval in s)."""
    state = tempfile.mkdtemp(prefix="cryo-bench-workloads-", dir="/var/tmp")
    names = [f"w{i}" for i in range(n)]
    sups = []
    env = dict(os.environ, CRYO_STATE_DIR=state)
    program = ["python3", "-c", BALLAST.format(MIB)] if MIB else ["python3", TICKER, "1"]
    try:
        for name in names:
            sups.append(subprocess.Popen(
                [CRYO, "run", "--name", name, "--every", "2s", "--keep", "1000", "--"] + program,
                stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(state, f"{name}.err"), "w"),
                stdin=subprocess.DEVNULL, env=env))
        deadline = time.monotonic() + 120
        while not all(os.path.exists(os.path.join(state, name, "pid")) for name in names):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} workloads not all running after 120 s")
            time.sleep(0.1)
        time.sleep(WARMUP)
        t0 = time.time()
        time.sleep(SECONDS)
        t1 = time.time()
        total = 0
        medians = []
        for name in names:
            ts = [t for t in gen_times(state, name) if t0 <= t <= t1]
            total += len(ts)
            gaps = [b - a for a, b in zip(ts, ts[1:])]
            # A workload that got one checkpoint or none waited the whole
            # window at least.
            medians.append(statistics.median(gaps) if gaps else t1 - t0)
        return total / (t1 - t0), medians
    finally:
        for s in sups:
            s.send_signal(signal.SIGTERM)
        for s in sups:
            try:
                s.wait(60)
            except subprocess.TimeoutExpired:
                s.kill()
                s.wait()
        shutil.rmtree(state, ignore_errors=True)


def main():
    os.makedirs(OUT, exist_ok=True)
    results = {}
    for n in COUNTS:
        results[n] = []
        for rep in range(REPS):
            rate, medians = one_run(n)
            results[n].append({"per_second": rate, "medians": medians})
            print(f"  {n} workloads: round {rep + 1}/{REPS} done", file=sys.stderr, flush=True)
    with open(os.path.join(OUT, "workloads.json"), "w") as f:
        json.dump({"every_s": EVERY, "seconds": SECONDS, "mib": MIB, "reps": REPS, "machine": os.uname().release,
                   "nproc": os.cpu_count(), "results": results}, f, indent=1)
    what = f", holding {MIB} MiB of random bytes" if MIB else ""
    print(f"{', '.join(map(str, COUNTS))} small workloads (python3, a line a second{what}), "
          f"each `cryo run --every 2s`, over {SECONDS:.0f} s ({REPS} runs; min / max over "
          f"runs)\n")
    print("| workloads | checkpoints per second, all | ideal | interval per workload, "
          "median (s) | worst workload's median (s) |")
    print("|---|---|---|---|---|")
    for n in COUNTS:
        rates = [r["per_second"] for r in results[n]]
        med = [statistics.median(r["medians"]) for r in results[n]]
        worst = [max(r["medians"]) for r in results[n]]
        print(f"| {n} | {min(rates):.2f} / {max(rates):.2f} | {n / EVERY:.1f} | "
              f"{min(med):.2f} / {max(med):.2f} | {min(worst):.2f} / {max(worst):.2f} |")


if __name__ == "__main__":
    main()
