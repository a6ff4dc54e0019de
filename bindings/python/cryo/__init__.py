"""cryo: the calls a Python program makes to cryo, its checkpoint/restore runtime.

A program run under `cryo run` may checkpoint itself at a quiet point of its
loop::

    import cryo

    try:
        if cryo.checkpoint() == cryo.RESTORED:
            ...  # a copy restored from that checkpoint
    except OSError as e:
        ...  # no checkpoint was taken; ENOTCONN outside cryo

or, from a coroutine, without holding its event loop while the image is
stored::

    status, generation = await cryo.checkpoint_async()

The same program runs unchanged outside cryo, where every call fails at once
with ENOTCONN. This package binds libcryo (libcryo(3), cryo.h) through ctypes:
it loads libcryo.so.0 when imported (set CRYO_LIBRARY to a path to load
another), which takes the control socket `cryo run` gave the program, so
import it before the program starts children. Every call is thread-safe.
Only the process `cryo run` started, and its restored copies, can checkpoint:
in a child of fork() (multiprocessing's too) every call fails with ENOTCONN.
"""

import asyncio
import errno
import os
import threading
from typing import NamedTuple, Optional

from . import _libcryo

__all__ = [
    "CHECKPOINTED",
    "RESTORED",
    "CheckpointResult",
    "checkpoint",
    "checkpoint_async",
    "generation",
    "version",
]

#: The version of this package; version() tells libcryo's.
__version__ = "0.1.0"

#: checkpoint()'s result in the original process, which runs on
#: (libcryo's CRYO_CHECKPOINTED).
CHECKPOINTED = 0
#: checkpoint()'s result in a copy restored from that checkpoint
#: (libcryo's CRYO_RESTORED).
RESTORED = 1


class CheckpointResult(NamedTuple):
    """What checkpoint_async() learnt: ``status`` is CHECKPOINTED (the image
    of ``generation`` is durable, and this process runs on) or RESTORED (this
    process is a copy restored from ``generation``)."""

    status: int
    generation: int


def _error(err: int) -> OSError:
    return OSError(err, os.strerror(err))


# What this process has under way through the package. libcryo tells the
# news of a cryo_checkpoint_async() to the next cryo_checkpoint_result()
# only, and any checkpoint requested before that call reads the news off the
# socket first: an asynchronous one would lose it, a synchronous one would
# leave the fd unreadable with the news unread. So while a checkpoint_async()
# awaits its news no checkpoint is asked for, and none starts while a
# checkpoint() of another thread is under way (two checkpoint() calls wait
# for each other in libcryo, as ever). Kept with the PID they are of: a child
# of fork() inherits the memory, not what is under way.
_lock = threading.Lock()
_owner = 0  # the PID the two below are of
_sync_calls = 0  # checkpoint() calls under way
_awaiting = False  # a checkpoint_async() under way or awaiting its news


def _start(sync: bool) -> None:
    """Takes note of a checkpoint starting, or raises EBUSY."""
    global _owner, _sync_calls, _awaiting
    with _lock:
        if _owner != os.getpid():
            _owner, _sync_calls, _awaiting = os.getpid(), 0, False
        if _awaiting or (not sync and _sync_calls):
            raise _error(errno.EBUSY)
        if sync:
            _sync_calls += 1
        else:
            _awaiting = True


def _end(sync: bool) -> None:
    global _sync_calls, _awaiting
    with _lock:
        if _owner != os.getpid():
            return
        if sync:
            _sync_calls -= 1
        else:
            _awaiting = False


def checkpoint() -> int:
    """Checkpoints this process now and waits until the image is durable.

    Returns CHECKPOINTED in the original process, and RESTORED when the
    process was later restored from this checkpoint (like fork(), it returns
    twice over a process's life). It blocks the calling thread, an event
    loop's too, until the image is stored: a coroutine awaits
    checkpoint_async() instead.

    Raises OSError with libcryo's errno; no checkpoint was taken, the
    program runs on unharmed and the previous checkpoint stays the newest:
    ENOTCONN not under cryo, in a child of fork(), or the supervisor is gone
    (then for good); EBUSY a checkpoint is under way (also while a
    checkpoint_async() of this process is, or awaits its news); ENOSPC, EIO, ...
    the dump or its storage failed (the supervisor logs why); EPROTO the
    supervisor answered something this libcryo cannot read.
    """
    _start(sync=True)
    try:
        r = _libcryo.lib.cryo_checkpoint()
    finally:
        _end(sync=True)
    if r < 0:
        raise _error(-r)
    return r


def generation() -> int:
    """The generation of the last checkpoint this process took or was
    restored from, 0 if none. Generations of one workload only grow. In a
    child of fork(), its parent's at the fork."""
    return int(_libcryo.lib.cryo_generation())


def version() -> str:
    """The version of the libcryo this package runs with, "MAJOR.MINOR.PATCH".
    It needs no cryo and answers in any process."""
    v: bytes = _libcryo.lib.cryo_version()
    return v.decode()


async def checkpoint_async(timeout: Optional[float] = None) -> CheckpointResult:
    """Checkpoints this process and awaits, through the running event loop,
    the news that the image is durable.

    It holds the loop only until libcryo's cryo_checkpoint_async() returns,
    once the supervisor has dumped the process (which is frozen for most of
    that time anyway), then lets it run, serving other tasks, until the news
    arrives on libcryo's cryo_checkpoint_fd() (watched with
    loop.add_reader(), read with cryo_checkpoint_result(), and taken off the
    loop again before this returns). Call it at a quiet point: the image is
    of the process as it is at that call.
    Until the news arrives, a crash restores the previous checkpoint.

    Returns CheckpointResult(CHECKPOINTED, G) once generation G is durable, or
    CheckpointResult(RESTORED, G) in a copy restored from generation G (which
    is durable, as it was restored from; no news is awaited).

    Raises OSError with libcryo's errno when nothing was dumped (as
    checkpoint() does: ENOTCONN outside cryo, EBUSY while another checkpoint
    of this process is under way, a checkpoint() of another thread too,
    ...), when the image was dumped but could not be stored (ENOSPC, EIO,
    ...: that generation does not exist, the one before stays the newest,
    the program runs on), or ENOTCONN when the supervisor went away before
    telling. Raises asyncio.TimeoutError (the
    builtin TimeoutError, an OSError with no errno, since Python 3.11) when
    timeout (seconds) passes first; the checkpoint goes on, and its news is
    not told. Cancelled, it stops waiting likewise.
    """
    loop = asyncio.get_running_loop()
    _start(sync=False)
    try:
        r = _libcryo.lib.cryo_checkpoint_async()
        if r < 0:
            raise _error(-r)
        if r == RESTORED:
            return CheckpointResult(RESTORED, generation())
        news = await asyncio.wait_for(_durable_news(loop), timeout)
        if news < 0:
            raise _error(-news)
        return CheckpointResult(CHECKPOINTED, news)
    finally:
        _end(sync=False)


async def _durable_news(loop: asyncio.AbstractEventLoop) -> int:
    """Awaits the news of the last cryo_checkpoint_async(): the generation
    made durable, or a negative errno."""
    fd = _libcryo.lib.cryo_checkpoint_fd()
    if fd < 0:
        return fd
    news: "asyncio.Future[int]" = loop.create_future()
    watching = False

    def watch() -> None:
        nonlocal watching
        loop.add_reader(fd, readable)
        watching = True

    def readable() -> None:
        nonlocal watching
        # Off the loop before reading: the read that tells ENOTCONN has
        # closed the fd, and another file may get its number at once.
        loop.remove_reader(fd)
        watching = False
        r = _libcryo.lib.cryo_checkpoint_result()
        if r == -errno.EAGAIN:
            watch()  # woken with no news yet
        elif not news.done():
            news.set_result(r)

    watch()
    try:
        return await news
    finally:
        # Cancelled, or timed out, before the news: the fd is still libcryo's.
        if watching:
            loop.remove_reader(fd)
