"""Tests of the Python binding outside cryo, and against a supervisor the test
plays over a socket pair (as tests/unit/test-libcryo.c does for libcryo):
each case runs program.py in a process of its own, as libcryo takes its
control socket once, when it is loaded.

Run by `meson test` (suites unit and python), which sets CRYO_LIBRARY to the
build's libcryo, CRYO_HEADER to cryo.h and CRYO_PROJECT_VERSION; by hand:
  CRYO_LIBRARY=build/libcryo.so.0 python3 -m unittest discover -s bindings/python/tests
"""

import asyncio
import errno
import os
import queue
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_DIR = os.path.dirname(HERE)
sys.path.insert(0, PACKAGE_DIR)

import cryo  # noqa: E402

MAGIC = 0x4F595243  # "CRYO" (runtime/protocol.h)
CHECKPOINT, RESULT, CHECKPOINT_ASYNC, DURABLE = 1, 2, 3, 4
MSG = struct.Struct("=IIqQ")  # struct cryo_msg: magic, type, value, generation
DEADLINE = 20  # seconds for any one step of a case


class Outside(unittest.TestCase):
    """Outside cryo, every call fails at once with ENOTCONN."""

    def test_constants_are_cryo_h(self) -> None:
        header = os.environ.get("CRYO_HEADER")
        if not header:
            self.skipTest("CRYO_HEADER is not set (meson test sets it)")
        with open(header) as f:
            text = f.read()
        defines = dict(re.findall(r"#define (CRYO_\w+) +(\d+)", text))
        self.assertEqual(cryo.CHECKPOINTED, int(defines["CRYO_CHECKPOINTED"]))
        self.assertEqual(cryo.RESTORED, int(defines["CRYO_RESTORED"]))
        self.assertEqual(cryo.CheckpointResult._fields, ("status", "generation"))

    def test_versions(self) -> None:
        self.assertRegex(cryo.version(), r"^\d+\.\d+\.\d+$")
        project = os.environ.get("CRYO_PROJECT_VERSION")
        if not project:
            self.skipTest("CRYO_PROJECT_VERSION is not set (meson test sets it)")
        self.assertEqual(cryo.version(), project)
        self.assertEqual(cryo.__version__, project)
        with open(os.path.join(PACKAGE_DIR, "pyproject.toml")) as f:
            self.assertIn(f'\nversion = "{project}"\n', f.read())

    def test_checkpoint_enotconn(self) -> None:
        with self.assertRaises(OSError) as cm:
            cryo.checkpoint()
        self.assertEqual(cm.exception.errno, errno.ENOTCONN)
        self.assertEqual(cm.exception.strerror, os.strerror(errno.ENOTCONN))
        self.assertEqual(cryo.generation(), 0)

    def test_checkpoint_async_enotconn(self) -> None:
        async def attempt() -> int:
            loop = asyncio.get_running_loop()
            before = len(loop._selector.get_map())  # type: ignore[attr-defined]
            with self.assertRaises(OSError) as cm:
                await cryo.checkpoint_async(timeout=5)
            self.assertEqual(cm.exception.errno, errno.ENOTCONN)
            # Nothing left on the loop.
            self.assertEqual(len(loop._selector.get_map()), before)  # type: ignore[attr-defined]
            return 0

        asyncio.run(attempt())
        # And again: a failed call leaves no checkpoint "under way".
        asyncio.run(attempt())

    def test_bad_library(self) -> None:
        env = dict(os.environ, CRYO_LIBRARY="/nonexistent/libcryo.so.0", PYTHONPATH=PACKAGE_DIR)
        r = subprocess.run([sys.executable, "-c", "import cryo"], env=env,
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ImportError: cannot load libcryo from CRYO_LIBRARY=/nonexistent/libcryo.so.0",
                      r.stderr)

    def test_installed_path(self) -> None:
        """Without CRYO_LIBRARY, a package that meson installed loads libcryo
        from where meson put it when the loader does not find libcryo.so.0
        (meson install runs no ldconfig)."""
        library = os.environ.get("CRYO_LIBRARY")
        if not library:
            self.skipTest("CRYO_LIBRARY is not set (meson test sets it)")
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(os.path.join(PACKAGE_DIR, "cryo"), os.path.join(tmp, "cryo"))
            with open(os.path.join(tmp, "cryo", "_install.py"), "w") as f:
                f.write(f"LIBCRYO = {os.path.abspath(library)!r}\n")
            env = {k: v for k, v in os.environ.items()
                   if k not in ("CRYO_LIBRARY", "LD_LIBRARY_PATH")}
            env["PYTHONPATH"] = tmp
            r = subprocess.run(
                # Whether the loader finds libcryo.so.0 by itself, asked
                # first: once loaded, a library is found by its soname.
                [sys.executable, "-c", "import ctypes\n"
                 "try:\n ctypes.CDLL('libcryo.so.0'); print('soname')\n"
                 "except OSError:\n print('no soname')\n"
                 "import cryo\n"
                 "print(cryo._libcryo.path, cryo.version())"],
                env=env, cwd=tmp, capture_output=True, text=True, timeout=DEADLINE)
            self.assertEqual(r.returncode, 0, r.stderr)
            found, loaded = r.stdout.splitlines()
            expected = "libcryo.so.0" if found == "soname" else os.path.abspath(library)
            self.assertEqual(loaded, f"{expected} {cryo.version()}")

    def test_garbage_control_fd(self) -> None:
        """An fd that is no socket: outside cryo, and the variable is gone
        from os.environ, whose copy children would inherit."""
        with Program("sync", control=None, env={"CRYO_CONTROL_FD": "0"}) as p:
            p.expect("environ -")
            p.expect("OSError ENOTCONN")
            p.expect("OSError ENOTCONN")
            p.expect("done")


class Program:
    """program.py SCENARIO, with the test as its supervisor on a socket pair."""

    def __init__(self, scenario: str, control: bool = True, env: dict = {}) -> None:
        self.sock = None
        e = dict(os.environ, PYTHONPATH=PACKAGE_DIR, **env)
        pass_fds = ()
        if control:
            self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(DEADLINE)
            e["CRYO_CONTROL_FD"] = str(theirs.fileno())
            pass_fds = (theirs.fileno(),)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "program.py"), scenario],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=e, pass_fds=pass_fds, text=True)
        if control:
            theirs.close()
        # Its lines, read by a thread: a wait for one has a deadline.
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line.strip())

    def __enter__(self) -> "Program":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sock:
            self.sock.close()
        self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("program.py did not end")
        finally:
            self.reader.join(DEADLINE)
            self.proc.stdout.close()  # type: ignore[union-attr]

    def expect(self, line: str) -> None:
        """The program's next line is LINE (it must come within DEADLINE)."""
        got = self.readline()
        if got != line:
            raise AssertionError(f"expected {line!r}, program.py said {got!r}")

    def readline(self) -> str:
        try:
            return self.lines.get(timeout=DEADLINE)
        except queue.Empty:
            raise AssertionError(f"program.py said nothing for {DEADLINE} s") from None

    def send_line(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def request(self, kind: int) -> None:
        """Reads the program's request, which must be KIND."""
        assert self.sock
        data = b""
        while len(data) < MSG.size:
            chunk = self.sock.recv(MSG.size - len(data))
            if not chunk:
                raise AssertionError("the program closed its control socket")
            data += chunk
        magic, kind_got, _, _ = MSG.unpack(data)
        if (magic, kind_got) != (MAGIC, kind):
            raise AssertionError(f"request {magic:#x} {kind_got}, expected {kind}")

    def reply(self, kind: int, value: int, generation: int) -> None:
        assert self.sock
        self.sock.sendall(MSG.pack(MAGIC, kind, value, generation))


class Supervised(unittest.TestCase):
    """Against a supervisor played by the test."""

    def test_sync(self) -> None:
        with Program("sync") as p:
            p.expect("environ -")
            p.request(CHECKPOINT)
            p.reply(RESULT, 0, 3)
            p.expect("result 0 3")
            p.request(CHECKPOINT)
            p.reply(RESULT, -errno.EIO, 3)
            p.expect("OSError EIO")
            p.expect("done")

    def test_async_loop_runs_while_news_pending(self) -> None:
        """The loop serves while the image is being stored, a checkpoint
        asked for meanwhile is EBUSY, the news is the result, and the fd is
        off the loop afterwards."""
        with Program("async-twice") as p:
            p.expect("environ -")
            for gen in (7, 8):
                p.request(CHECKPOINT_ASYNC)
                p.reply(RESULT, 0, gen)
                # The news is held back until the loop has answered.
                p.send_line(f"ping{gen}")
                p.expect("busy EBUSY")
                p.expect(f"pong ping{gen}")
                p.reply(DURABLE, gen, gen)
                p.expect(f"result 0 {gen} {gen}")
                p.expect("watched 0")
            p.expect("done")

    def test_async_not_stored(self) -> None:
        with Program("async") as p:
            p.expect("environ -")
            p.request(CHECKPOINT_ASYNC)
            p.reply(RESULT, 0, 2)
            p.send_line("ping")
            p.expect("busy EBUSY")
            p.expect("pong ping")
            p.reply(DURABLE, -errno.ENOSPC, 1)
            p.expect("OSError ENOSPC")
            p.expect("watched 0")
            p.expect("done")

    def test_async_refused(self) -> None:
        with Program("async") as p:
            p.expect("environ -")
            p.request(CHECKPOINT_ASYNC)
            p.reply(RESULT, -errno.EBUSY, 1)
            p.expect("OSError EBUSY")
            p.expect("watched 0")
            p.expect("done")

    def test_async_restored(self) -> None:
        """A restored copy wakes in cryo_checkpoint_async() with "restored",
        and awaits no news."""
        with Program("async") as p:
            p.expect("environ -")
            p.request(CHECKPOINT_ASYNC)
            p.reply(RESULT, 1, 4)
            p.expect("result 1 4 4")
            p.expect("watched 0")
            p.expect("done")

    def test_async_supervisor_gone(self) -> None:
        """The supervisor goes before its news: ENOTCONN, the fd (closed by
        libcryo) is off the loop, and every later call is ENOTCONN."""
        with Program("async-gone") as p:
            p.expect("environ -")
            p.request(CHECKPOINT_ASYNC)
            p.reply(RESULT, 0, 5)
            p.send_line("ping")
            p.expect("busy EBUSY")
            p.expect("pong ping")
            assert p.sock
            p.sock.close()
            p.sock = None
            p.expect("OSError ENOTCONN")
            p.expect("watched 0")
            p.expect("OSError ENOTCONN")
            p.expect("done")

    def test_async_timeout(self) -> None:
        with Program("async-timeout") as p:
            p.expect("environ -")
            p.request(CHECKPOINT_ASYNC)
            p.reply(RESULT, 0, 6)
            p.expect("timeout")
            p.expect("watched 0")
            p.expect("done")

    def test_async_while_sync_in_thread(self) -> None:
        """A checkpoint_async() while a checkpoint() of another thread waits
        in libcryo is EBUSY (it would hold the loop, waiting for libcryo's
        lock, until that one's image is durable); the checkpoint() goes on."""
        with Program("sync-in-thread") as p:
            p.expect("environ -")
            p.request(CHECKPOINT)
            p.send_line("go")
            p.expect("async EBUSY")
            p.reply(RESULT, 0, 9)
            p.expect("sync 0 9")
            p.expect("done")

    def test_fork_child(self) -> None:
        with Program("fork") as p:
            p.expect("environ -")
            p.expect("child 0")
            p.expect("done")


if __name__ == "__main__":
    unittest.main()
