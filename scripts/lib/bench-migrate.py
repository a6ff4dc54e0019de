#!/usr/bin/env python3
"""cryo migrate's downtime, measured between two "hosts" that are network
namespaces on this machine (made here, joined by a bridge, removed at the
end), each with its own state directory and `cryo serve`.

For bench-target programs of the given sizes (half random, half repetitive
memory) and for redis-server holding KEYS keys, the workload moves A -> B ->
A ... REPS times while it runs, plainly and with --precopy, and each move
reports:
  - frozen: from the freeze until the target runs it (cryo's count, the
    program's address off the network all along);
  - for bench-target, the program's own view: the largest gap in its
    CLOCK_REALTIME loop;
  - the phases: dump (CRIU, into tmpfs), transfer (compress, encrypt, send,
    store durably), restore (on the target, until it confirms);
  - the bytes sent.
Prints a markdown table and writes OUT_DIR/migrate.json.
Usage: bench-migrate.py BUILD_DIR OUT_DIR SIZES_MB REDIS_KEYS REPS
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BUILD, OUT = sys.argv[1], sys.argv[2]
SIZES = [int(s) for s in sys.argv[3].split(",") if s]
REDIS_KEYS, REPS = int(sys.argv[4]), int(sys.argv[5])
CRYO = os.path.join(BUILD, "cryo")
TARGET = os.path.join(BUILD, "tests", "bench-target")
NS = f"cb{os.getpid()}"
HOSTS = {"a": "10.79.0.1", "b": "10.79.0.2"}
WORKLOAD_ADDR = "10.79.0.50"


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def netns(host):
    return ["nsenter", f"--net=/run/netns/{NS}{host}"]


def topology_up():
    sh("ip", "netns", "add", f"{NS}sw")
    sh("ip", "-n", f"{NS}sw", "link", "add", "sw0", "type", "bridge")
    sh("ip", "-n", f"{NS}sw", "link", "set", "sw0", "up")
    for h, addr in list(HOSTS.items()) + [("c", "10.79.0.3")]:
        sh("ip", "netns", "add", f"{NS}{h}")
        sh("ip", "link", "add", f"{NS}{h}-up", "type", "veth", "peer", "name", f"{NS}{h}-sw")
        sh("ip", "link", "set", f"{NS}{h}-up", "netns", f"{NS}{h}")
        sh("ip", "link", "set", f"{NS}{h}-sw", "netns", f"{NS}sw")
        sh("ip", "-n", f"{NS}sw", "link", "set", f"{NS}{h}-sw", "master", "sw0", "up")
        sh("ip", "-n", f"{NS}{h}", "link", "set", "lo", "up")
        if h == "c":
            sh("ip", "-n", f"{NS}c", "addr", "add", f"{addr}/24", "dev", f"{NS}c-up")
            sh("ip", "-n", f"{NS}c", "link", "set", f"{NS}c-up", "up")
            continue
        sh("ip", "-n", f"{NS}{h}", "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", f"{NS}{h}", "link", "set", f"{NS}{h}-up", "master", "br0", "up")
        sh("ip", "-n", f"{NS}{h}", "addr", "add", f"{addr}/24", "dev", "br0")
        sh("ip", "-n", f"{NS}{h}", "link", "set", "br0", "up")


def topology_down():
    for h in ("a", "b", "c", "sw"):
        subprocess.run(["ip", "netns", "del", f"{NS}{h}"], capture_output=True)


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise TimeoutError(what)


def gaps_after(paths, t0_ns):
    """The gaps the program reported that started after t0_ns, in ms."""
    out = []
    for p in paths:
        if not os.path.exists(p):
            continue
        with open(p, errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[0] == "gap" and int(parts[1]) >= t0_ns:
                    out.append((int(parts[2]) - int(parts[1])) / 1e6)
    return out


def summarize(values):
    return {"min": min(values), "median": statistics.median(values)} if values else None


def size(b):
    return f"{b / 1048576:.1f} MiB" if b >= 1048576 else f"{b / 1024:.1f} KiB"


def fmt(s):
    return f"{s['min']:.0f} / {s['median']:.0f}" if s else "-"


def bench_one(label, argv, state, procs, ready, check=None, extra=()):
    """Runs argv as workload 'w' on A, then migrates it REPS times."""
    name = "w"
    run_out = os.path.join(state, "run.out")
    sup = subprocess.Popen(
        netns("a") + [CRYO, "run", "--state-dir", os.path.join(state, "a"), "--name", name,
                      "--net", f"{WORKLOAD_ADDR}/24", "--bridge", "br0", "--", *argv],
        stdout=open(run_out, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    procs.append(sup)
    ready()
    outputs = [run_out] + [os.path.join(state, h, name, "output.log") for h in HOSTS]
    rows = []
    here, there = "a", "b"
    for _ in range(REPS):
        time.sleep(1)
        t0 = time.time_ns()
        res = subprocess.run(
            netns(here) + [CRYO, "migrate", "--state-dir", os.path.join(state, here), name,
                           "--to", f"{HOSTS[there]}:7070", "--key-file",
                           os.path.join(state, "key"), "--json", *extra],
            capture_output=True, text=True, timeout=300)
        final = json.loads(res.stdout.strip().splitlines()[-1])
        if not final.get("ok"):
            raise RuntimeError(f"migration failed: {final.get('error')}")
        if check:
            check()
        time.sleep(0.5)
        gaps = gaps_after(outputs, t0)
        rows.append({"frozen_ms": final["frozen_ms"], "bytes": final["bytes"],
                     "phases": final["phases"], "gap_ms": max(gaps) if gaps else None})
        here, there = there, here
    subprocess.run([CRYO, "stop", "--state-dir", os.path.join(state, here), name],
                   capture_output=True, timeout=60)
    sup.wait(timeout=60)
    # The next program starts afresh on A: nothing of this one stays.
    for h in HOSTS:
        shutil.rmtree(os.path.join(state, h, name), ignore_errors=True)
    return {
        "program": label,
        "frozen_ms": summarize([r["frozen_ms"] for r in rows]),
        "gap_ms": summarize([r["gap_ms"] for r in rows if r["gap_ms"] is not None]),
        "precopy_ms": summarize([r["phases"]["precopy"] for r in rows
                                 if "precopy" in r["phases"]]),
        "dump_ms": summarize([r["phases"]["dump"] for r in rows]),
        "transfer_ms": summarize([r["phases"]["transfer"] for r in rows]),
        "restore_ms": summarize([r["phases"]["restore"] for r in rows]),
        "bytes": statistics.median([r["bytes"] for r in rows]),
        "runs": rows,
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    state = tempfile.mkdtemp(prefix="cryo-bench-migrate-", dir="/var/tmp")
    procs = []
    results = []
    topology_up()
    try:
        key = os.path.join(state, "key")
        with open(key, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(key, 0o600)
        for h, addr in HOSTS.items():
            os.makedirs(os.path.join(state, h))
            log = os.path.join(state, f"serve-{h}.log")
            procs.append(subprocess.Popen(
                netns(h) + [CRYO, "serve", "--listen", f"{addr}:7070", "--key-file", key,
                            "--state-dir", os.path.join(state, h), "--bridge", "br0"],
                stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            wait_until(lambda log=log: "serving" in open(log).read(), 10, "cryo serve")
        for mb in SIZES:
            run_out = os.path.join(state, "run.out")

            def ready():
                wait_until(lambda: os.path.exists(run_out) and
                           "ready" in open(run_out, errors="replace").read(), 120,
                           "bench-target")
            for extra in ((), ("--precopy",)):
                results.append(bench_one(f"bench-target {mb} MB {' '.join(extra)}".strip(),
                                         [TARGET, str(mb)], state, procs, ready,
                                         extra=extra))
        if REDIS_KEYS:
            def cli(*args, **kw):
                return subprocess.run(netns("c") + ["redis-cli", "-h", WORKLOAD_ADDR, *args],
                                      capture_output=True, text=True, timeout=120, **kw)

            def ready():
                wait_until(lambda: cli("ping").stdout.strip() == "PONG", 30, "redis-server")
                load = "".join(f"SET key:{i} value-{i}\n" for i in range(REDIS_KEYS))
                cli("--pipe", input=load)

            def check():
                n = cli("dbsize").stdout.strip()
                if n != str(REDIS_KEYS):
                    raise RuntimeError(f"redis holds {n} keys after the move")
            for extra in ((), ("--precopy",)):
                results.append(bench_one(
                    f"redis-server, {REDIS_KEYS} keys {' '.join(extra)}".strip(),
                    ["redis-server", "--port", "6379", "--bind", "0.0.0.0", "--protected-mode",
                     "no", "--save", "", "--appendonly", "no", "--loglevel", "warning"],
                    state, procs, ready, check, extra=extra))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for h in HOSTS:
            d = os.path.join(state, h)
            for w in os.listdir(d) if os.path.isdir(d) else []:
                subprocess.run([CRYO, "stop", "--state-dir", d, w], capture_output=True,
                               timeout=60)
        topology_down()
        shutil.rmtree(state, ignore_errors=True)

    print(f"cryo migrate between two network namespaces on this machine, {REPS} moves each "
          "(min / median, ms):\n")
    print("| program | frozen | program's own gap | pre-copy | dump | transfer | restore | "
          "sent frozen |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['program']} | {fmt(r['frozen_ms'])} | {fmt(r['gap_ms'])} | "
              f"{fmt(r['precopy_ms'])} | {fmt(r['dump_ms'])} | {fmt(r['transfer_ms'])} | "
              f"{fmt(r['restore_ms'])} | {size(r['bytes'])} |")
    with open(os.path.join(OUT, "migrate.json"), "w") as f:
        json.dump(results, f, indent=1)


main()
