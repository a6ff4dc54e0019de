#!/usr/bin/env python3
"""cryo's benchmark: cryo beside raw CRIU, measured in one run on one machine.

For programs of several sizes (tests/programs/bench-target.c: half random,
half repetitive memory) it measures, REPS times each:
  - frozen time, seen from inside the program (the largest gap in its
    CLOCK_REALTIME loop): `cryo checkpoint`, and raw `criu dump
    --leave-running` into tmpfs;
  - cryo_checkpoint()'s call time (the program waits until durable);
  - time to durable: `cryo checkpoint` until the image is fsynced and
    published, against raw CRIU followed by `tar | zstd -T0` and fsync;
  - image size: cryo's, raw CRIU's, and zstd -3 of raw CRIU's;
  - restore: from kill -9 until the program runs again (the end of its gap)
    and until it has read all its memory, against raw `criu restore` from
    uncompressed tmpfs images; cryo's lazy restore (the default) and its
    full one (--no-lazy-restore);
  - cryo's own memory during a lazy restore (its anonymous resident
    memory at its peak while the program's memory comes back);
  - the memcpy time of the same size, the physical floor.
Prints a markdown table, writes JSON and a PNG chart (gnuplot).
Usage: bench.py BUILD_DIR OUT_DIR SIZES_MB REPS
   or: bench.py BUILD_DIR OUT_DIR redis:KEYS REPS   (redis-server holding KEYS keys:
       CRIU's frozen time, image size and time to durable of `cryo checkpoint`)
   or: bench.py BUILD_DIR OUT_DIR tcp:N,N,... REPS   (a small TCP server,
       tests/programs/asyncio-server.py, with N idle clients connected
       (tests/programs/tcp-clients.py): CRIU's frozen time and the time of
       `cryo checkpoint`, min/median/max; every client is asked once more after
       the checkpoints and must answer)
   or: bench.py BUILD_DIR OUT_DIR frozen:SIZES_MB REPS   (only the freeze, as the
       program sees it, of the first and of a later checkpoint: `cryo checkpoint`
       against raw `criu dump --leave-running` into tmpfs, the first and a
       second dump of the same process; min/median/max, and the machine's
       cost of a first write to a page)
"""
import json
import re
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BUILD, OUT = sys.argv[1], sys.argv[2]
REDIS_KEYS = int(sys.argv[3][6:]) if sys.argv[3].startswith("redis:") else 0
TCP_CLIENTS = ([int(n) for n in sys.argv[3][4:].split(",")]
               if sys.argv[3].startswith("tcp:") else [])
FROZEN_ONLY = sys.argv[3].startswith("frozen:")
SIZES = ([] if REDIS_KEYS or TCP_CLIENTS else
         [int(s) for s in sys.argv[3].removeprefix("frozen:").split(",")])
REPS = int(sys.argv[4])
CRYO = os.path.join(BUILD, "cryo")
TARGET = os.path.join(BUILD, "tests", "bench-target")
MEMCPY = os.path.join(BUILD, "tests", "bench-memcpy")
PROGRAMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests",
                        "programs")
CRIU = shutil.which("criu") or "/usr/local/sbin/criu"
# Extra options for `cryo run`, to compare its ways of dumping.
RUN_ARGS = os.environ.get("CRYO_BENCH_RUN_ARGS", "").split()


class Output:
    """The target's stdout, read from a file it appends to."""

    def __init__(self, path):
        self.path = path
        self.pos = 0
        self.pending = []

    def lines(self):
        """Every complete line not consumed yet."""
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.pos += len(complete)
        lines, self.pending = self.pending + complete.decode(errors="replace").splitlines(), []
        return lines

    def wait_for(self, prefix, timeout=120):
        """Consumes lines up to the first that starts with prefix."""
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            lines = self.lines()
            for i, line in enumerate(lines):
                seen.append(line)
                if line.startswith(prefix):
                    self.pending = lines[i + 1:]
                    return line, seen
            time.sleep(0.005)
        raise TimeoutError(f"no '{prefix}' from the target in {timeout}s ({self.path})")

    def wait_for_gap_after(self, t_ns, timeout=120):
        """The first gap that ends after t_ns (a restore's), then the
        'touched' line after it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line, _ = self.wait_for("gap", max(1, deadline - time.monotonic()))
            end = int(line.split()[2])
            if end > t_ns:
                touched, _ = self.wait_for("touched", max(1, deadline - time.monotonic()))
                return end, int(touched.split()[1])
        raise TimeoutError(f"no gap after {t_ns} in {self.path}")

    def gaps_since(self, settle=0.3, timeout=10):
        """Gap lines that arrived up to now (waiting settle seconds first,
        and up to timeout seconds for the first: a dump always makes one)."""
        time.sleep(settle)
        gaps = []
        deadline = time.monotonic() + timeout
        while True:
            gaps += [(int(p[1]), int(p[2])) for p in (line.split() for line in self.lines())
                     if p and p[0] == "gap"]
            if gaps or time.monotonic() > deadline:
                return gaps
            time.sleep(0.01)


class AnonPeak(threading.Thread):
    """Samples a process's anonymous resident memory (RssAnon) every 5 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.samples = []
        self.done = threading.Event()
        self.start()

    def run(self):
        while not self.done.is_set():
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    kb = next(int(x.split()[1]) for x in f if x.startswith("RssAnon:"))
            except (OSError, StopIteration):
                return
            self.samples.append((time.time_ns(), kb * 1024))
            time.sleep(0.005)

    def peak(self, t0, t1):
        """Stops; the largest sample taken between t0 and t1 (CLOCK_REALTIME ns)."""
        self.done.set()
        self.join()
        return max((b for t, b in self.samples if t0 <= t <= t1), default=0)


def max_gap_ms(gaps):
    return max(((e - s) / 1e6 for s, e in gaps), default=0.0)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def start_cryo(size, state, name, extra, env=None):
    out_path = os.path.join(state, f"{name}.out")
    with open(out_path, "w") as out, open(os.path.join(state, f"{name}.err"), "w") as err:
        sup = subprocess.Popen(
            [CRYO, "run", "--state-dir", state, "--name", name, *extra, *RUN_ARGS, "--", TARGET,
             str(size)],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
    return sup, Output(out_path)


def stop(sup):
    sup.send_signal(signal.SIGTERM)
    try:
        sup.wait(30)
    except subprocess.TimeoutExpired:
        sup.kill()
        sup.wait()


def checkpoint_after_change(state, name, o):
    """A whole checkpoint, 1% of the pages changed, the next checkpoint: its
    JSON and the freeze the program saw. Returns the program's PID too."""
    o.wait_for("ready")
    run([CRYO, "checkpoint", "--state-dir", state, "--json", name])
    pid = int(open(os.path.join(state, name, "pid")).read())
    time.sleep(0.2)
    os.kill(pid, signal.SIGHUP)
    o.wait_for("changed")
    o.lines()
    res = json.loads(run([CRYO, "checkpoint", "--state-dir", state, "--json", name]).stdout)
    return res, max_gap_ms(o.gaps_since()), pid


def bench_untracked(size, state):
    """The checkpoint after 1% of the pages changed, without write tracking
    (CRYO_TRACK=0): every page is sent inside the freeze."""
    name = f"untracked{size}"
    sup, o = start_cryo(size, state, name, [], {**os.environ, "CRYO_TRACK": "0"})
    try:
        res, frozen, _ = checkpoint_after_change(state, name, o)
        return {"untracked_frozen_ms": frozen, "untracked_durable_ms": res["duration_us"] / 1e3}
    finally:
        stop(sup)


def bench_delta(size, state):
    """A full checkpoint, 1% of the pages changed, the next checkpoint (only
    the pages written since are sent, where CRIU tracks writes), then one with
    nothing changed."""
    name = f"delta{size}"
    sup, o = start_cryo(size, state, name, [])
    try:
        res, frozen, pid = checkpoint_after_change(state, name, o)
        r = {"delta_bytes": res["size"], "delta_durable_ms": res["duration_us"] / 1e3,
             "delta_frozen_ms": frozen}
        o.lines()
        res = json.loads(run([CRYO, "checkpoint", "--state-dir", state, "--json", name]).stdout)
        r["same_durable_ms"] = res["duration_us"] / 1e3
        r["same_frozen_ms"] = max_gap_ms(o.gaps_since())
        # Its restore after kill -9: lazily, through the generation it is built on.
        o.lines()
        mem = AnonPeak(sup.pid)
        killed = time.time_ns()
        os.kill(pid, signal.SIGKILL)
        running, touched = o.wait_for_gap_after(killed)
        r["delta_restore_running_ms"] = (running - killed) / 1e6
        r["delta_restore_all_ms"] = (touched - killed) / 1e6
        r["delta_restore_mem_bytes"] = mem.peak(running, touched)
        return r
    finally:
        stop(sup)


def bench_full_restore(size, state):
    """A restore that brings all the memory back before the program runs
    (--no-lazy-restore), after kill -9."""
    name = f"full{size}"
    sup, o = start_cryo(size, state, name, ["--no-delta", "--no-lazy-restore"])
    try:
        o.wait_for("ready")
        run([CRYO, "checkpoint", "--state-dir", state, "--json", name])
        o.lines()
        pid = int(open(os.path.join(state, name, "pid")).read())
        killed = time.time_ns()
        os.kill(pid, signal.SIGKILL)
        running, touched = o.wait_for_gap_after(killed)
        return {"full_restore_running_ms": (running - killed) / 1e6,
                "full_restore_all_ms": (touched - killed) / 1e6}
    finally:
        stop(sup)


def bench_cryo(size, state):
    """One round of cryo, every generation whole: external checkpoint,
    program checkpoints, restore; then the incremental round."""
    name = f"bench{size}"
    sup, o = start_cryo(size, state, name, ["--no-delta"])
    try:
        o.wait_for("ready")
        time.sleep(0.2)
        o.lines()
        # cryo_checkpoint(), from inside
        pid = int(open(os.path.join(state, name, "pid")).read())
        os.kill(pid, signal.SIGUSR1)
        line, _ = o.wait_for("call")
        _, start, end, rc = line.split()
        assert rc == "0", line
        call_ms = (int(end) - int(start)) / 1e6
        time.sleep(0.2)
        o.lines()
        # cryo_checkpoint_async(): until the program runs again, and until durable
        os.kill(pid, signal.SIGUSR2)
        line, _ = o.wait_for("async")
        _, start, end, rc = line.split()
        assert rc == "0", line
        async_ms = (int(end) - int(start)) / 1e6
        line, _ = o.wait_for("durable")
        assert int(line.split()[2]) > 0, line
        async_durable_ms = (int(line.split()[1]) - int(start)) / 1e6
        time.sleep(0.2)
        o.lines()
        # cryo checkpoint, from outside; the restore below starts from it, so
        # that the program's loop sees the restore as a gap.
        t0 = time.monotonic()
        res = json.loads(run([CRYO, "checkpoint", "--state-dir", state, "--json", name]).stdout)
        durable_ms = (time.monotonic() - t0) * 1e3
        frozen_ms = max_gap_ms(o.gaps_since())
        r = {"frozen_ms": frozen_ms, "durable_ms": durable_ms, "image_bytes": res["size"],
             "raw_bytes": res["raw_size"], "criu_frozen_ms": res["frozen_us"] / 1e3,
             "call_ms": call_ms, "async_ms": async_ms, "async_durable_ms": async_durable_ms}
        # restore after kill -9
        mem = AnonPeak(sup.pid)
        killed = time.time_ns()
        os.kill(pid, signal.SIGKILL)
        running, touched = o.wait_for_gap_after(killed)
        r["restore_running_ms"] = (running - killed) / 1e6
        r["restore_all_ms"] = (touched - killed) / 1e6
        r["restore_mem_bytes"] = mem.peak(running, touched)
    finally:
        stop(sup)
    r.update(bench_delta(size, state))
    r.update(bench_untracked(size, state))
    r.update(bench_full_restore(size, state))
    return r


def bench_raw(size, state, tmpfs):
    """The same with raw CRIU: dump into tmpfs, zstd, restore from tmpfs."""
    out_path = os.path.join(state, "raw.out")
    images = os.path.join(tmpfs, "raw-images")
    shutil.rmtree(images, ignore_errors=True)
    os.makedirs(images)
    out = open(out_path, "a")
    target = subprocess.Popen([TARGET, str(size)], stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    restored = None
    try:
        o = Output(out_path)
        o.wait_for("ready")
        time.sleep(0.2)
        o.lines()
        t0 = time.monotonic()
        run([CRIU, "dump", "-t", str(target.pid), "-D", images, "--leave-running",
             "-o", "dump.log"])
        dump_ms = (time.monotonic() - t0) * 1e3
        frozen_ms = max_gap_ms(o.gaps_since())
        archive = os.path.join(state, "raw.tar.zst")
        t1 = time.monotonic()
        run(["sh", "-c", f'tar -C "{images}" -cf - --exclude dump.log . | zstd -q -T0 -3 -o "{archive}" -f && sync -f "{archive}"'])
        zstd_ms = (time.monotonic() - t1) * 1e3
        r = {"frozen_ms": frozen_ms, "durable_ms": dump_ms + zstd_ms,
             "raw_bytes": dir_bytes(images) - os.path.getsize(os.path.join(images, "dump.log")),
             "zstd3_bytes": os.path.getsize(archive)}
        killed = time.time_ns()
        target.kill()
        target.wait()
        restored = subprocess.run([CRIU, "restore", "-d", "-D", images, "-o", "restore.log",
                                   "--pidfile", os.path.join(state, "raw.pid")],
                                  capture_output=True, text=True)
        if restored.returncode != 0:
            raise RuntimeError(f"raw criu restore failed: see {images}/restore.log")
        running, touched = o.wait_for_gap_after(killed)
        r["restore_running_ms"] = (running - killed) / 1e6
        r["restore_all_ms"] = (touched - killed) / 1e6
        return r
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()
        pidfile = os.path.join(state, "raw.pid")
        if os.path.exists(pidfile):
            try:
                os.kill(int(open(pidfile).read()), signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.unlink(pidfile)
        out.close()
        shutil.rmtree(images, ignore_errors=True)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_wait_and_load(port, keys):
    """Waits (30 s at most) until the redis-server on port answers, then
    loads it with keys keys."""
    deadline = time.monotonic() + 30
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                         text=True).stdout.strip() != "PONG":
        if time.monotonic() > deadline:
            raise TimeoutError("redis-server did not start")
        time.sleep(0.05)
    load = "\n".join(f"SET key:{i} value-{i}" for i in range(1, keys + 1)) + "\n"
    subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=load, text=True,
                   check=True, capture_output=True)


def bench_redis(keys, reps):
    """redis-server under cryo, loaded with keys, checkpointed reps times."""
    state = tempfile.mkdtemp(prefix="cryo-bench-redis-", dir="/var/tmp")
    port = free_port()
    sup = subprocess.Popen(
        [CRYO, "run", "--state-dir", state, "--name", "redis", *RUN_ARGS, "--", "redis-server",
         "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        redis_wait_and_load(port, keys)
        dbsize = run(["redis-cli", "-p", str(port), "dbsize"]).stdout.strip()
        rows = []
        for _ in range(reps):
            t0 = time.monotonic()
            res = json.loads(run([CRYO, "checkpoint", "--state-dir", state, "--json", "redis"]).stdout)
            rows.append({"frozen_ms": res["frozen_us"] / 1e3, "durable_ms": (time.monotonic() - t0) * 1e3,
                         "image_bytes": res["size"], "raw_bytes": res["raw_size"]})
        f = [r["frozen_ms"] for r in rows]
        d = [r["durable_ms"] for r in rows]
        print(f"redis-server with {dbsize} keys, {reps} checkpoints:")
        print(f"  frozen (CRIU's count): min {min(f):.0f} ms, median {statistics.median(f):.0f} ms")
        print(f"  time to durable: min {min(d):.0f} ms, median {statistics.median(d):.0f} ms")
        print(f"  image {rows[0]['image_bytes'] / 2**20:.1f} MiB ({rows[0]['raw_bytes'] / 2**20:.1f} MiB raw)")
        os.makedirs(OUT, exist_ok=True)
        with open(os.path.join(OUT, "redis.json"), "w") as out:
            json.dump({"keys": keys, "dbsize": int(dbsize), "runs": rows}, out, indent=2)
    finally:
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(30)
        except subprocess.TimeoutExpired:
            sup.kill()
            sup.wait()
        shutil.rmtree(state, ignore_errors=True)


def redis_load(mode, keys, requests):
    """redis-benchmark's SET throughput (50 clients, pipelines of 16, random
    keys among 1,000,000) against a redis-server holding keys keys: plain,
    under `cryo run --every 5s`, or with redis's own snapshot every 5 s
    (`save 5 1`: fork and copy-on-write). Returns requests per second and,
    under cryo, the checkpoints taken meanwhile and their freezes."""
    state = tempfile.mkdtemp(prefix="cryo-bench-redis-load-", dir="/var/tmp")
    port = free_port()
    server = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "no",
              "--dir", state, "--save", "5 1" if mode == "save" else ""]
    log = os.path.join(state, "supervisor.err")
    if mode == "cryo":
        server = [CRYO, "run", "--state-dir", state, "--name", "redis", "--every", "5s",
                  "--verbose", *RUN_ARGS, "--", *server]
    with open(log, "w") as err:
        proc = subprocess.Popen(server, stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL)
    try:
        redis_wait_and_load(port, keys)
        start = os.path.getsize(log)
        t0 = time.monotonic()
        out = run(["redis-benchmark", "-p", str(port), "-t", "set", "-P", "16", "-c", "50",
                   "-r", "1000000", "-n", str(requests), "-q"]).stdout
        elapsed = time.monotonic() - t0
        r = {"rps": requests / elapsed, "reported": out.strip().splitlines()[-1] if out else ""}
        if mode == "cryo":
            with open(log) as f:
                f.seek(start)
                frozen = [float(m.group(1)) for m in re.finditer(
                    r"checkpoint \d+ of 'redis' stored \([^,]+, [^,]+, frozen ([0-9.]+) ms", f.read())]
            r["checkpoints"] = len(frozen)
            r["frozen_ms"] = frozen
        return r
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(state, ignore_errors=True)


def bench_redis_load(keys, reps, requests=8_000_000):
    rows = {m: [] for m in ("plain", "cryo", "save")}
    for rep in range(reps):
        for mode in rows:
            rows[mode].append(redis_load(mode, keys, requests))
            print(f"  redis load: {mode} round {rep + 1}/{reps} done", file=sys.stderr, flush=True)
    plain = statistics.median(r["rps"] for r in rows["plain"])
    print(f"redis-benchmark -t set -P 16 -c 50 -r 1000000 -n {requests}, {keys} keys loaded first, "
          f"{reps} runs each (requests per second, min / median / max, and against plain):")
    print("| redis-server | SET/s min / median / max | median / plain | checkpoints | freezes (ms) |")
    print("|---|---|---|---|---|")
    for mode, label in (("plain", "alone"), ("cryo", "under `cryo run --every 5s`"),
                        ("save", "with its own `save 5 1`")):
        v = sorted(r["rps"] for r in rows[mode])
        ck = ", ".join(str(r.get("checkpoints", "-")) for r in rows[mode]) if mode == "cryo" else "-"
        fz = sorted(f for r in rows[mode] for f in r.get("frozen_ms", []))
        fzs = f"{fz[0]:.0f} / {statistics.median(fz):.0f} / {fz[-1]:.0f}" if fz else "-"
        print(f"| {label} | {v[0]:.0f} / {statistics.median(v):.0f} / {v[-1]:.0f} | "
              f"{statistics.median(v) / plain:.2f} | {ck} | {fzs} |")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "redis-load.json"), "w") as out:
        json.dump({"keys": keys, "requests": requests, "runs": rows}, out, indent=2)


def wait_line(path, prefix, timeout):
    """The first line of the file at path that starts with prefix, waited
    for until timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path) as f:
            for line in f.read().splitlines():
                if line.startswith(prefix):
                    return line
        time.sleep(0.05)
    raise TimeoutError(f"no line '{prefix}...' in {path} after {timeout} s")


def bench_tcp_clients(n, reps, state):
    """asyncio-server.py under cryo with n idle clients connected, checkpointed
    reps times: CRIU's frozen time and the time of `cryo checkpoint` each."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = os.path.join(state, "server.out")
    with open(out, "w") as o:
        sup = subprocess.Popen(
            [CRYO, "run", "--state-dir", state, "--name", "tcp", *RUN_ARGS, "--",
             os.path.join(PROGRAMS, "asyncio-server.py"), str(port)],
            stdout=o, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    clients = None
    try:
        wait_line(out, "listening", 30)
        cout = os.path.join(state, "clients.out")
        if n:
            with open(cout, "w") as o:
                clients = subprocess.Popen(
                    [os.path.join(PROGRAMS, "tcp-clients.py"), str(port), str(n), "600"],
                    stdout=o, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            wait_line(cout, "connected", 60)
        rows = []
        for _ in range(reps):
            t0 = time.monotonic()
            res = json.loads(run([CRYO, "checkpoint", "--state-dir", state, "--json", "tcp"]).stdout)
            rows.append({"frozen_ms": res["frozen_us"] / 1e3,
                         "checkpoint_ms": (time.monotonic() - t0) * 1e3})
        if clients:
            clients.send_signal(signal.SIGUSR1)
            line = wait_line(cout, "answered", 30)
            if line != f"answered {n} of {n}":
                raise RuntimeError(f"after the checkpoints the clients said '{line}'")
        return rows
    finally:
        if clients:
            clients.kill()
            clients.wait()
        stop(sup)


def main_tcp_clients(counts, reps):
    os.makedirs(OUT, exist_ok=True)
    results = {"reps": reps, "machine": os.uname().release, "runs": {}}
    for n in counts:
        state = tempfile.mkdtemp(prefix="cryo-bench-tcp-", dir="/var/tmp")
        try:
            results["runs"][str(n)] = bench_tcp_clients(n, reps, state)
        finally:
            shutil.rmtree(state, ignore_errors=True)
        print(f"  {n} clients done", file=sys.stderr, flush=True)

    def mmm(values):
        return (f"{min(values):.0f} / {statistics.median(values):.0f} / "
                f"{max(values):.0f}")

    table = ["| idle TCP clients | frozen (CRIU's count) min / median / max | "
             "`cryo checkpoint` min / median / max |", "|---|---|---|"]
    for n in counts:
        rows = results["runs"][str(n)]
        table.append(f"| {n} | {mmm([r['frozen_ms'] for r in rows])} ms | "
                     f"{mmm([r['checkpoint_ms'] for r in rows])} ms |")
    text = "\n".join(table)
    print(text)
    with open(os.path.join(OUT, "tcp-clients.json"), "w") as f:
        json.dump(results, f, indent=2)


def bench_frozen_cryo(size, state, later=2):
    """The freeze of cryo's first checkpoint of a program and of the later
    ones (nothing changed between), as the program sees it."""
    name = f"frozen{size}"
    sup, o = start_cryo(size, state, name, [])
    try:
        o.wait_for("ready")
        frozen, before = [], []
        for _ in range(1 + later):
            time.sleep(0.3)
            o.lines()
            asked = time.time_ns()
            run([CRYO, "checkpoint", "--state-dir", state, "--json", name])
            gaps = o.gaps_since()
            frozen.append(max_gap_ms(gaps))
            start = max(gaps, key=lambda g: g[1] - g[0])[0]
            before.append((start - asked) / 1e6)
        return {"first_ms": frozen[0], "later_ms": frozen[1:],
                "first_before_ms": before[0], "later_before_ms": before[1:]}
    finally:
        stop(sup)


def bench_frozen_raw(size, tmpfs, later=2):
    """The same with raw CRIU: criu dump --leave-running into tmpfs, the first
    dump of the process and then again (each into a new directory)."""
    out_path = os.path.join(tmpfs, "raw.out")
    out = open(out_path, "w")
    target = subprocess.Popen([TARGET, str(size)], stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        o = Output(out_path)
        o.wait_for("ready")
        frozen = []
        for i in range(1 + later):
            time.sleep(0.3)
            o.lines()
            images = os.path.join(tmpfs, f"raw-images-{i}")
            os.makedirs(images)
            run([CRIU, "dump", "-t", str(target.pid), "-D", images, "--leave-running",
                 "-o", "dump.log"])
            frozen.append(max_gap_ms(o.gaps_since()))
            shutil.rmtree(images, ignore_errors=True)
        return {"first_ms": frozen[0], "later_ms": frozen[1:]}
    finally:
        target.kill()
        target.wait()
        out.close()


def main_frozen():
    os.makedirs(OUT, exist_ok=True)
    tmpfs = tempfile.mkdtemp(prefix="cryo-bench-", dir="/dev/shm")
    disk = tempfile.mkdtemp(prefix="cryo-bench-", dir="/var/tmp")
    results = {"sizes_mb": SIZES, "reps": REPS, "machine": os.uname().release, "runs": {}}
    try:
        for size in SIZES:
            line = run([MEMCPY, str(size)]).stdout.split()
            runs = {"cryo": [], "raw": [], "memcpy_ms": float(line[1]),
                    "memcpy_fresh_ms": float(line[3])}
            for rep in range(REPS):
                state = tempfile.mkdtemp(prefix="cryo-", dir=disk)
                runs["cryo"].append(bench_frozen_cryo(size, state))
                shutil.rmtree(state, ignore_errors=True)
                runs["raw"].append(bench_frozen_raw(size, tmpfs))
                print(f"  {size} MB: round {rep + 1}/{REPS} done", file=sys.stderr, flush=True)
            results["runs"][str(size)] = runs
    finally:
        shutil.rmtree(tmpfs, ignore_errors=True)
        shutil.rmtree(disk, ignore_errors=True)

    def mmm(values):
        return f"{min(values):.0f} / {statistics.median(values):.0f} / {max(values):.0f}"

    table = ["| size | checkpoint | cryo frozen min / median / max | raw CRIU frozen min / "
             "median / max | cryo / raw (median) | cryo: asked until frozen |",
             "|---|---|---|---|---|---|"]
    for size in SIZES:
        runs = results["runs"][str(size)]
        for label in ("first", "later"):
            def pick(r, key):
                v = r[key]
                return v if isinstance(v, list) else [v]
            c = [v for r in runs["cryo"] for v in pick(r, f"{label}_ms")]
            w = [v for r in runs["raw"] for v in pick(r, f"{label}_ms")]
            b = [v for r in runs["cryo"] for v in pick(r, f"{label}_before_ms")]
            table.append(f"| {size} MB | {label} | {mmm(c)} ms | {mmm(w)} ms | "
                         f"{statistics.median(c) / statistics.median(w):.2f} | {mmm(b)} ms |")
    text = "\n".join(table)
    text += "\n\n" + "; ".join(
        f"{size} MB: memcpy {results['runs'][str(size)]['memcpy_ms']:.0f} ms, into fresh memory "
        f"{results['runs'][str(size)]['memcpy_fresh_ms']:.0f} ms" for size in SIZES)
    print(text)
    with open(os.path.join(OUT, "frozen.json"), "w") as f:
        json.dump(results, f, indent=2)


def summarize(values):
    return {"min": min(values), "median": statistics.median(values)}


def main():
    if REDIS_KEYS:
        bench_redis(REDIS_KEYS, REPS)
        bench_redis_load(REDIS_KEYS, REPS)
        return
    if TCP_CLIENTS:
        main_tcp_clients(TCP_CLIENTS, REPS)
        return
    if FROZEN_ONLY:
        main_frozen()
        return
    os.makedirs(OUT, exist_ok=True)
    tmpfs = tempfile.mkdtemp(prefix="cryo-bench-", dir="/dev/shm")
    # The state directory is on the disk, as cryo's default is.
    disk = tempfile.mkdtemp(prefix="cryo-bench-", dir="/var/tmp")
    results = {"sizes_mb": SIZES, "reps": REPS, "machine": os.uname().release, "runs": {}}
    try:
        for size in SIZES:
            runs = {"cryo": [], "raw": [], "memcpy_ms": None}
            line = run([MEMCPY, str(size)]).stdout.split()
            runs["memcpy_ms"] = float(line[1])
            runs["memcpy_fresh_ms"] = float(line[3])
            for rep in range(REPS):
                for kind in ("cryo", "raw"):
                    state = tempfile.mkdtemp(prefix=f"{kind}-", dir=disk)
                    r = bench_cryo(size, state) if kind == "cryo" else bench_raw(size, state, tmpfs)
                    runs[kind].append(r)
                    shutil.rmtree(state, ignore_errors=True)
                print(f"  {size} MB: round {rep + 1}/{REPS} done", file=sys.stderr, flush=True)
            results["runs"][str(size)] = runs
    finally:
        shutil.rmtree(tmpfs, ignore_errors=True)
        shutil.rmtree(disk, ignore_errors=True)

    rows = []
    for size in SIZES:
        runs = results["runs"][str(size)]
        c = {k: summarize([r[k] for r in runs["cryo"]]) for k in runs["cryo"][0]}
        w = {k: summarize([r[k] for r in runs["raw"]]) for k in runs["raw"][0]}
        results["runs"][str(size)]["summary"] = {"cryo": c, "raw": w}

        def row(label, cv, rv, unit="ms"):
            fmt = (lambda v: f"{v:.0f}") if unit == "ms" else (lambda v: f"{v / 2**20:.1f} MiB")
            ratio = f"{cv['median'] / rv['median']:.2f}" if rv and rv["median"] else "-"
            rs = f"{fmt(rv['min'])} / {fmt(rv['median'])}" if rv else "-"
            rows.append(f"| {size} MB | {label} | {fmt(cv['min'])} / {fmt(cv['median'])} | {rs} | {ratio} |")

        row("frozen: `cryo checkpoint` vs `criu dump`", c["frozen_ms"], w["frozen_ms"])
        row("`cryo_checkpoint()` call vs `criu dump`", c["call_ms"], w["frozen_ms"])
        row("`cryo_checkpoint_async()` call vs `criu dump`", c["async_ms"], w["frozen_ms"])
        row("`cryo_checkpoint_async()` until durable vs `criu dump` + `zstd -T0`",
            c["async_durable_ms"], w["durable_ms"])
        row("time to durable vs `criu dump` + `zstd -T0`", c["durable_ms"], w["durable_ms"])
        row("image size vs raw CRIU images", c["image_bytes"], w["raw_bytes"], "bytes")
        row("image size vs `zstd -3` of raw images", c["image_bytes"], w["zstd3_bytes"], "bytes")
        row("next image, after 1% of pages changed, vs `zstd -3` of raw images", c["delta_bytes"], w["zstd3_bytes"], "bytes")
        row("its time to durable vs `criu dump` + `zstd -T0`", c["delta_durable_ms"], w["durable_ms"])
        row("its freeze (only the written pages sent) vs `criu dump`", c["delta_frozen_ms"], w["frozen_ms"])
        row("the same without write tracking (`CRYO_TRACK=0`): freeze", c["untracked_frozen_ms"], w["frozen_ms"])
        row("the same without write tracking: time to durable", c["untracked_durable_ms"], w["durable_ms"])
        row("next checkpoint, nothing changed: freeze", c["same_frozen_ms"], w["frozen_ms"])
        row("next checkpoint, nothing changed: time to durable", c["same_durable_ms"], w["durable_ms"])
        row("restore: running again", c["restore_running_ms"], w["restore_running_ms"])
        row("restore: all memory back", c["restore_all_ms"], w["restore_all_ms"])
        row("restore of the incremental generation: running again",
            c["delta_restore_running_ms"], w["restore_running_ms"])
        row("restore of the incremental generation: all memory back", c["delta_restore_all_ms"],
            w["restore_all_ms"])
        row("restore: cryo's own memory while the program's comes back (peak)",
            c["restore_mem_bytes"], None, "bytes")
        row("restore of the incremental generation: cryo's own memory meanwhile (peak)",
            c["delta_restore_mem_bytes"], None, "bytes")
        row("restore with `--no-lazy-restore`: running again", c["full_restore_running_ms"],
            w["restore_running_ms"])
        row("restore with `--no-lazy-restore`: all memory back", c["full_restore_all_ms"],
            w["restore_all_ms"])
        mc = {"min": runs["memcpy_ms"], "median": runs["memcpy_ms"]}
        row("memcpy of the same size (floor)", mc, None)
        mf = {"min": runs["memcpy_fresh_ms"], "median": runs["memcpy_fresh_ms"]}
        row("memcpy into fresh memory (this machine's first-touch cost)", mf, None)

    table = ["| size | measure | cryo min / median | raw CRIU min / median | cryo / raw (median) |",
             "|---|---|---|---|---|"] + rows
    text = "\n".join(table)
    print(text)
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(text + "\n")

    data = os.path.join(OUT, "frozen.dat")
    with open(data, "w") as f:
        for size in SIZES:
            s = results["runs"][str(size)]["summary"]
            f.write(f"{size} {s['cryo']['frozen_ms']['median']} {s['raw']['frozen_ms']['median']} "
                    f"{results['runs'][str(size)]['memcpy_ms']}\n")
    png = os.path.join(OUT, "frozen.png")
    if shutil.which("gnuplot"):
        script = f"""set terminal png size 800,500
set output '{png}'
set title 'Frozen time of a checkpoint (median of {REPS})'
set xlabel 'touched memory (MB)'
set ylabel 'ms'
set logscale x 2
set key left top
plot '{data}' using 1:2 with linespoints title 'cryo checkpoint', \\
     '{data}' using 1:3 with linespoints title 'criu dump --leave-running (tmpfs)', \\
     '{data}' using 1:4 with linespoints title 'memcpy (floor)'
"""
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
        print(f"\nJSON: {OUT}/results.json, chart: {png}")


if __name__ == "__main__":
    main()
