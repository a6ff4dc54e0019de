#!/usr/bin/env python3
"""cryo's benchmark of a held file: a program holding a file of SIZE MiB open
for writing (tests/programs/bench-held-file.py), 1% of its 4 KiB blocks
rewritten between checkpoints, four checkpoints in a row (the first copies
the file whole, the next ones the blocks changed); beside it the same program
with its file closed. For each generation: the bytes stored for the file
(cryo inspect --json, before compression), and CRIU's frozen time with and
without the file held, min/median/max over REPS runs. Prints a markdown
table and writes OUT_DIR/held-file.json.
Usage: bench-files.py BUILD_DIR OUT_DIR SIZE_MIB REPS"""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BUILD, OUT, SIZE, REPS = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
CRYO = os.path.join(BUILD, "cryo")
PROGRAM = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "programs",
                       "bench-held-file.py")
GENERATIONS = 4


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True)


def wait_line(path, line, timeout=300):
    """Waits until the file at path holds line (a whole line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path) as f:
            if line in f.read().splitlines():
                return
        time.sleep(0.05)
    raise TimeoutError(f"no '{line}' in {path} after {timeout} s")


def one_run(mode, work):
    """Four checkpoints of the program (hold or nohold): per generation,
    (frozen ms, bytes stored for the file)."""
    state = os.path.join(work, f"state-{mode}")
    data = os.path.join(work, f"data-{mode}")
    os.makedirs(state)
    out = os.path.join(work, f"{mode}.out")
    with open(out, "w") as o, open(os.path.join(work, f"{mode}.err"), "w") as e:
        sup = subprocess.Popen([CRYO, "run", "--state-dir", state, "--name", "hf",
                                "--files-max", "4G", "--", "python3", PROGRAM, data, str(SIZE),
                                mode], stdout=o, stderr=e, stdin=subprocess.DEVNULL)
    try:
        wait_line(out, "ready")
        gens = []
        for g in range(1, GENERATIONS + 1):
            if g > 1:
                with open(data + ".cmd", "w") as f:
                    f.write(f"change {SIZE * 256 // 100}\n")
                wait_line(out, f"done {g - 1}")
            res = json.loads(run([CRYO, "checkpoint", "--state-dir", state, "--json", "hf"]).stdout)
            info = json.loads(run([CRYO, "inspect", "--state-dir", state, "--json",
                                   f"hf@{res['generation']}"]).stdout)
            held = info.get("held_files") or [{"stored": 0, "base": 0}]
            gens.append({"frozen_ms": res["frozen_us"] / 1e3, "stored": held[0]["stored"],
                         "base": held[0]["base"], "image": res["size"]})
        return gens
    finally:
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(60)
        except subprocess.TimeoutExpired:
            sup.kill()
            sup.wait()


def mmm(values):
    return (min(values), statistics.median(values), max(values))


def main():
    os.makedirs(OUT, exist_ok=True)
    runs = {"hold": [], "nohold": []}
    for rep in range(REPS):
        for mode in ("hold", "nohold"):
            # On the disk, as cryo's state directory is by default.
            work = tempfile.mkdtemp(prefix="cryo-bench-files-", dir="/var/tmp")
            try:
                runs[mode].append(one_run(mode, work))
            finally:
                shutil.rmtree(work, ignore_errors=True)
        print(f"  held file {SIZE} MiB: round {rep + 1}/{REPS} done", file=sys.stderr,
              flush=True)
    with open(os.path.join(OUT, "held-file.json"), "w") as f:
        json.dump({"size_mib": SIZE, "reps": REPS, "machine": os.uname().release,
                   "runs": runs}, f, indent=1)
    print(f"held file of {SIZE} MiB, 1% of its blocks rewritten between checkpoints "
          f"({REPS} runs, min / median / max)\n")
    print("| generation | file stored | frozen, file held (ms) | frozen, file not held (ms) |")
    print("|---|---|---|---|")
    for g in range(GENERATIONS):
        stored = mmm([r[g]["stored"] for r in runs["hold"]])
        how = "whole" if runs["hold"][0][g]["base"] == 0 else f"blocks changed since {g}"
        held = mmm([r[g]["frozen_ms"] for r in runs["hold"]])
        free = mmm([r[g]["frozen_ms"] for r in runs["nohold"]])
        print(f"| {g + 1} | {stored[1] / 2**20:.2f} MiB ({how}) | "
              f"{held[0]:.0f} / {held[1]:.0f} / {held[2]:.0f} | "
              f"{free[0]:.0f} / {free[1]:.0f} / {free[2]:.0f} |")


if __name__ == "__main__":
    main()
