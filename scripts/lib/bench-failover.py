#!/usr/bin/env python3
"""cryo's benchmark of images kept off the machine (--store): a program of
SIZE MiB (tests/programs/bench-target.c: half random, half repetitive memory)
under `cryo run`, checkpointed once whole and then after 1% of its pages
changed, first without a store and then with `--store` to a real
S3-compatible store started here (OpenStack Swift's s3api,
scripts/lib/swift-s3, on loopback; stopped at the end). For each generation,
min/median/max over REPS runs:
  - the program's frozen time (CRIU's, as cryo checkpoint reports it),
    without and with --store;
  - time to durable here (cryo checkpoint's reply: fsynced locally);
  - the archive's bytes, which is what is uploaded;
  - upload: from the local reply until the uploader's record (store.json)
    lists the generation in the store (the store's ETag checked);
and, with --failover (needs etcd, started likewise): the time from the
owner's death (its supervisor and program SIGKILLed at once, as a lost
machine) until the program runs again on a standby, which waited for the
lease (TTL given) and restored the newest published generation: the restored
program's first sign of life (the end of its gap, CLOCK_REALTIME) minus the
instant of the kill; with REDIS_KEYS as well, the same for redis-server
holding that many keys, until it answers PING on the standby (and then
holds every key).
Prints markdown tables and writes OUT_DIR/store.json.
Usage: bench-failover.py BUILD_DIR OUT_DIR SIZES_MIB REPS [TTL_S [REDIS_KEYS]]"""
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BUILD, OUT = sys.argv[1], sys.argv[2]
SIZES = [int(s) for s in sys.argv[3].split(",")]
REPS = int(sys.argv[4])
TTL = int(sys.argv[5]) if len(sys.argv) > 5 else 0
REDIS_KEYS = int(sys.argv[6]) if len(sys.argv) > 6 else 0
CRYO = os.path.join(BUILD, "cryo")
TARGET = os.path.join(BUILD, "tests", "bench-target")
TOOL = os.path.join(BUILD, "tests", "remote-tool")
LIB = os.path.dirname(os.path.abspath(__file__))
BUCKET = "cryo-bench"


def run(cmd, env=None):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)


def wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = pred()
        if r:
            return r
        time.sleep(0.005)
    raise TimeoutError(f"{what}: not within {timeout} s")


def read_lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def source_env(path, env):
    """The variables a scripts/lib service's env file exports."""
    for line in read_lines(path):
        line = line.removeprefix("export ")
        if "=" in line:
            k, v = line.split("=", 1)
            env[k] = v
    return env


def uploaded(state, name, gen):
    try:
        with open(os.path.join(state, name, "store.json")) as f:
            rec = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return any(g["generation"] == gen for g in rec.get("remote", []))


def published(state, name, gen):
    """Whether the lease's keeper of workload name in state has published
    generation gen (its lease.json)."""
    try:
        with open(os.path.join(state, name, "lease.json")) as f:
            return json.load(f).get("published", 0) >= gen
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def one_run(size, work, store, env, i):
    """Two checkpoints (whole, then 1% changed): per generation a dict."""
    state = os.path.join(work, f"state-{size}-{i}-{'s' if store else 'n'}")
    os.makedirs(state, mode=0o700)
    out = os.path.join(state, "out")
    name = "b"
    args = [CRYO, "run", "--state-dir", state, "--name", name]
    if store:
        args += ["--store", f"s3://{BUCKET}/run{size}-{i}"]
    with open(out, "w") as o, open(os.path.join(state, "err"), "w") as e:
        sup = subprocess.Popen(args + ["--", TARGET, str(size)], stdout=o, stderr=e,
                               stdin=subprocess.DEVNULL, env=env)
    try:
        wait(lambda: any(l.startswith("ready") for l in read_lines(out)), 120,
             "bench-target to start")
        time.sleep(0.5)
        rows = []
        for gen in (1, 2):
            if gen == 2:
                pid = int(open(os.path.join(state, name, "pid")).read())
                n = len(read_lines(out))
                os.kill(pid, signal.SIGHUP)
                wait(lambda: "changed" in read_lines(out)[n:], 60, "the 1% change")
            res = json.loads(run([CRYO, "checkpoint", "--state-dir", state, "--json", name],
                                 env).stdout)
            t0 = time.monotonic()
            row = {"generation": res["generation"], "frozen_ms": res["frozen_us"] / 1e3,
                   "durable_ms": res["duration_us"] / 1e3, "bytes": res["size"]}
            if store:
                wait(lambda: uploaded(state, name, res["generation"]), 300, "the upload")
                row["upload_ms"] = (time.monotonic() - t0) * 1e3
            rows.append(row)
        return rows
    finally:
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(60)
        except subprocess.TimeoutExpired:
            sup.kill()
            sup.wait()


def failover_run(size, work, env, i):
    """Owner on this machine, standby beside it (another state directory);
    the owner's supervisor and program killed at once: ms until the program
    runs on the standby."""
    lease = env["ETCD_ENDPOINT"].replace("http://", "etcd://")
    prefix = f"fo{size}-{i}"
    common = ["--name", "b", "--store", f"s3://{BUCKET}/{prefix}", "--lease", lease,
              "--lease-ttl", str(TTL)]
    procs = []
    try:
        dirs = {}
        for role in ("owner", "standby"):
            state = os.path.join(work, f"fo-{size}-{i}-{role}")
            os.makedirs(state, mode=0o700)
            dirs[role] = state
        owner_out = os.path.join(dirs["owner"], "out")
        with open(owner_out, "w") as o, open(os.path.join(dirs["owner"], "err"), "w") as e:
            procs.append(subprocess.Popen(
                [CRYO, "run", "--state-dir", dirs["owner"], *common, "--", TARGET, str(size)],
                stdout=o, stderr=e, stdin=subprocess.DEVNULL, env=env))
        pidfile = os.path.join(dirs["owner"], "b", "pid")
        wait(lambda: any(l.startswith("ready") for l in read_lines(owner_out)), 120,
             "the owner's program")
        time.sleep(0.5)
        gen = json.loads(run([CRYO, "checkpoint", "--state-dir", dirs["owner"], "--json", "b"],
                             env).stdout)["generation"]
        wait(lambda: published(dirs["owner"], "b", gen), 300, "the publication")
        st_out = os.path.join(dirs["standby"], "out")
        st_err = os.path.join(dirs["standby"], "err")
        with open(st_out, "w") as o, open(st_err, "w") as e:
            procs.append(subprocess.Popen(
                [CRYO, "run", "--state-dir", dirs["standby"], *common, "--standby", "--",
                 TARGET, str(size)], stdout=o, stderr=e, stdin=subprocess.DEVNULL, env=env))
        wait(lambda: any("waiting" in l for l in read_lines(st_err)), 60, "the standby")
        prog = int(open(pidfile).read())
        kill_ns = time.time_ns()
        kill_all(prog, procs[0].pid)

        def running_again():
            for l in read_lines(st_out):
                f = l.split()
                if f and f[0] == "gap" and int(f[2]) > kill_ns:
                    return int(f[2])
            return 0
        end = wait(running_again, TTL + 120, "the program on the standby")
        return (end - kill_ns) / 1e6
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def redis_ping(port):
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sk:
            sk.sendall(b"PING\r\n")
            return sk.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def failover_redis(keys, work, env, i):
    """redis-server holding keys under cryo run --lease, a standby beside it;
    the owner killed: ms until redis answers PING on the standby."""
    import socket
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    lease = env["ETCD_ENDPOINT"].replace("http://", "etcd://")
    common = ["--name", "r", "--store", f"s3://{BUCKET}/redis-{i}", "--lease", lease,
              "--lease-ttl", str(TTL)]
    cmd = ["--", "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no"]
    procs = []
    try:
        dirs = {}
        for role in ("owner", "standby"):
            dirs[role] = os.path.join(work, f"redis-{i}-{role}")
            os.makedirs(dirs[role], mode=0o700)
        procs.append(subprocess.Popen([CRYO, "run", "--state-dir", dirs["owner"], *common, *cmd],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      stdin=subprocess.DEVNULL, env=env))
        wait(lambda: redis_ping(port), 60, "redis-server to start")
        load = "\n".join(f"SET key:{k} value-{k}" for k in range(1, keys + 1)) + "\n"
        subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=load, text=True,
                       check=True, capture_output=True)
        gen = json.loads(run([CRYO, "checkpoint", "--state-dir", dirs["owner"], "--json", "r"],
                             env).stdout)["generation"]
        wait(lambda: published(dirs["owner"], "r", gen), 600, "the publication")
        st_err = os.path.join(dirs["standby"], "err")
        with open(st_err, "w") as e:
            procs.append(subprocess.Popen(
                [CRYO, "run", "--state-dir", dirs["standby"], *common, "--standby", *cmd],
                stdout=subprocess.DEVNULL, stderr=e, stdin=subprocess.DEVNULL, env=env))
        wait(lambda: any("waiting" in l for l in read_lines(st_err)), 60, "the standby")
        prog = int(open(os.path.join(dirs["owner"], "r", "pid")).read())
        t0 = time.monotonic()
        kill_all(prog, procs[0].pid)
        wait(lambda: not redis_ping(port), 30, "the owner's redis to go")
        wait(lambda: redis_ping(port), TTL + 300, "redis on the standby")
        ms = (time.monotonic() - t0) * 1e3
        dbsize = int(run(["redis-cli", "-p", str(port), "dbsize"]).stdout.strip())
        if dbsize != keys:
            raise RuntimeError(f"redis on the standby holds {dbsize} keys, not {keys}")
        return ms
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def kill_all(*pids):
    """SIGKILL to each (the supervisor's end may have taken the program
    along already)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def mmm(values):
    v = sorted(values)
    return f"{v[0]:.0f} / {statistics.median(v):.0f} / {v[-1]:.0f}"


def main():
    os.makedirs(OUT, exist_ok=True)
    work = tempfile.mkdtemp(prefix="cryo-bench-store-", dir="/var/tmp")
    env = dict(os.environ)
    services = []
    try:
        subprocess.run([os.path.join(LIB, "swift-s3"), "up", os.path.join(work, "swift")],
                       check=True, stdout=subprocess.DEVNULL)
        services.append(("swift-s3", os.path.join(work, "swift")))
        source_env(os.path.join(work, "swift", "env"), env)
        if TTL:
            subprocess.run([os.path.join(LIB, "etcd-test"), "up", os.path.join(work, "etcd")],
                           check=True, stdout=subprocess.DEVNULL)
            services.append(("etcd-test", os.path.join(work, "etcd")))
            source_env(os.path.join(work, "etcd", "env"), env)
        run([TOOL, "s3", "mb", BUCKET], env)
        results = {"sizes": {}}
        print(f"--store to OpenStack Swift's s3api on loopback; {REPS} runs per size; "
              "min / median / max")
        print()
        print("| MiB | generation | frozen, no store (ms) | frozen, --store (ms) | durable here "
              "(ms) | archive (KiB) | upload after durable (ms) | upload / durable |")
        print("|---|---|---|---|---|---|---|---|")
        for size in SIZES:
            plain, stored = [], []
            for i in range(REPS):
                plain.append(one_run(size, work, False, env, i))
                stored.append(one_run(size, work, True, env, i))
            results["sizes"][size] = {"no_store": plain, "store": stored}
            for g, what in ((0, "1 (whole)"), (1, "2 (1% changed)")):
                f0 = [r[g]["frozen_ms"] for r in plain]
                f1 = [r[g]["frozen_ms"] for r in stored]
                d = [r[g]["durable_ms"] for r in stored]
                b = [r[g]["bytes"] / 1024 for r in stored]
                u = [r[g]["upload_ms"] for r in stored]
                ratio = [r[g]["upload_ms"] / r[g]["durable_ms"] for r in stored]
                print(f"| {size} | {what} | {mmm(f0)} | {mmm(f1)} | {mmm(d)} | {mmm(b)} | "
                      f"{mmm(u)} | {min(ratio):.2f} / {statistics.median(ratio):.2f} / "
                      f"{max(ratio):.2f} |")
        if TTL:
            print()
            print(f"Failover (lease TTL {TTL} s): from the owner's SIGKILL (supervisor and "
                  "program) until the program runs on the standby, ms, min / median / max")
            print()
            print("| MiB | failover (ms) | minus the TTL (ms) |")
            print("|---|---|---|")
            results["failover"] = {}
            for size in SIZES:
                t = [failover_run(size, work, env, i) for i in range(REPS)]
                results["failover"][size] = t
                print(f"| {size} | {mmm(t)} | {mmm([x - TTL * 1000 for x in t])} |")
            if REDIS_KEYS:
                t = [failover_redis(REDIS_KEYS, work, env, i) for i in range(REPS)]
                results["failover"]["redis"] = {"keys": REDIS_KEYS, "ms": t}
                print(f"| redis, {REDIS_KEYS} keys | {mmm(t)} | "
                      f"{mmm([x - TTL * 1000 for x in t])} |")
        with open(os.path.join(OUT, "store.json"), "w") as f:
            json.dump(results, f, indent=1)
    finally:
        for script, d in reversed(services):
            subprocess.run([os.path.join(LIB, script), "down", d], check=False)
        subprocess.run(["rm", "-rf", work], check=False)


main()
