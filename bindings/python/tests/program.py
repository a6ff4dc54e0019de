"""A program using the binding, for test_cryo.py, which plays its supervisor
over the socket it hands over in CRYO_CONTROL_FD (or none: outside cryo).
Prints what it learns, a line at a time. Usage: program.py SCENARIO

While checkpoint_async() awaits its news, the loop answers each line on
stdin with "pong LINE" and "busy ERRNO" for a checkpoint() tried meanwhile,
so that the test sees the loop run.
"""

import asyncio
import errno
import os
import sys

import cryo


def say(*words: object) -> None:
    print(*words, flush=True)


def fail(e: OSError) -> None:
    say("OSError", errno.errorcode.get(e.errno or 0, e.errno))


def watched(loop: asyncio.AbstractEventLoop) -> int:
    """How many fds the loop watches besides stdin and its own wake-up pipe."""
    fds = set(loop._selector.get_map())  # type: ignore[attr-defined]
    fds.discard(0)
    fds.discard(loop._ssock.fileno())  # type: ignore[attr-defined]
    return len(fds)


async def async_checkpoint(timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()

    def line() -> None:
        text = sys.stdin.readline().strip()
        if not text:
            loop.remove_reader(0)
            return
        try:
            cryo.checkpoint()
            say("checkpoint during the wait returned")
        except OSError as e:
            say("busy", errno.errorcode.get(e.errno or 0, e.errno))
        say("pong", text)

    loop.add_reader(0, line)
    try:
        status, gen = await cryo.checkpoint_async(timeout=timeout)
        say("result", status, gen, cryo.generation())
    except asyncio.TimeoutError:  # before OSError: since 3.11, TimeoutError is one
        say("timeout")
    except OSError as e:
        fail(e)
    loop.remove_reader(0)
    say("watched", watched(loop))


async def async_twice() -> None:
    await async_checkpoint()
    await async_checkpoint()


def sync_in_thread() -> None:
    """checkpoint() in a thread; once stdin says so, checkpoint_async() in
    the loop meanwhile."""
    import threading

    def sync() -> None:
        try:
            say("sync", cryo.checkpoint(), cryo.generation())
        except OSError as e:
            fail(e)

    t = threading.Thread(target=sync)
    t.start()

    async def meanwhile() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)
        try:
            status, gen = await cryo.checkpoint_async(timeout=30)
            say("async", status, gen)
        except OSError as e:
            say("async", errno.errorcode.get(e.errno or 0, e.errno))

    asyncio.run(meanwhile())
    t.join(30)


def main() -> None:
    scenario = sys.argv[1]
    say("environ", os.environ.get("CRYO_CONTROL_FD", "-"))
    if scenario == "sync":
        try:
            r = cryo.checkpoint()
            say("result", r, cryo.generation())
        except OSError as e:
            fail(e)
        # A second call, after the first's outcome.
        try:
            r = cryo.checkpoint()
            say("result", r, cryo.generation())
        except OSError as e:
            fail(e)
    elif scenario == "async":
        asyncio.run(async_checkpoint())
    elif scenario == "async-twice":
        asyncio.run(async_twice())
    elif scenario == "async-timeout":
        asyncio.run(async_checkpoint(timeout=0.2))
    elif scenario == "async-gone":
        asyncio.run(async_checkpoint())
        try:
            cryo.checkpoint()
        except OSError as e:
            fail(e)
    elif scenario == "sync-in-thread":
        sync_in_thread()
    elif scenario == "fork":
        pid = os.fork()
        if pid == 0:
            try:
                cryo.checkpoint()
                os._exit(1)
            except OSError as e:
                os._exit(0 if e.errno == errno.ENOTCONN else 2)
        _, status = os.waitpid(pid, 0)
        say("child", os.waitstatus_to_exitcode(status))
    say("done")


main()
