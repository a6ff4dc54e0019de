#!/usr/bin/python3
"""An asyncio TCP server that checkpoints itself through the Python binding
(bindings/python, on PYTHONPATH). For each line a client sends it answers
"count N LINE", N counting every request since it started (in memory), as
asyncio-server.py does. It first takes a checkpoint with cryo.checkpoint(),
before it serves; then, from a coroutine, once the first request came and
after every EVERY requests, ROUNDS checkpoints with
await cryo.checkpoint_async(), serving meanwhile. Prints what it learns:
  checkpointed generation G
  durable generation G, count N, answered K while pending
  restored from generation G, count N
  failed: ...
Usage: cryo-asyncio-server.py PORT ROUNDS EVERY"""
import asyncio
import sys

import cryo

port, rounds, every = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
count = 0
pending = False  # a checkpoint's durability news is awaited
answered_pending = 0  # requests answered meanwhile
requests = asyncio.Queue()  # type: asyncio.Queue[int]


async def serve(reader, writer):
    global count, answered_pending
    try:
        while line := await reader.readline():
            count += 1
            if pending:
                answered_pending += 1
            writer.write(f"count {count} {line.decode().strip()}\n".encode())
            await writer.drain()
            requests.put_nowait(count)
    except ConnectionError:
        pass
    finally:
        writer.close()


async def checkpoints():
    global pending, answered_pending
    await requests.get()
    for _ in range(rounds):
        pending, answered_pending = True, 0
        at = count
        try:
            status, gen = await cryo.checkpoint_async(timeout=120)
        except (OSError, asyncio.TimeoutError) as e:
            print(f"failed: {e!r}", flush=True)
            return
        finally:
            pending = False
        if status == cryo.RESTORED:
            print(f"restored from generation {gen}, count {count}", flush=True)
        else:
            print(f"durable generation {gen}, count {at}, answered {answered_pending} "
                  "while pending", flush=True)
        while count < at + every:
            await requests.get()


async def main():
    print(f"cryo {cryo.version()}", flush=True)
    if cryo.checkpoint() == cryo.CHECKPOINTED:
        print(f"checkpointed generation {cryo.generation()}", flush=True)
    else:
        print(f"restored from generation {cryo.generation()}, count {count}", flush=True)
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    print("listening", flush=True)
    async with server:
        await asyncio.gather(server.serve_forever(), checkpoints())


asyncio.run(main())
