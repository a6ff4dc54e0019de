#!/usr/bin/python3
"""An unmodified asyncio TCP server: for each line a client sends it answers
"count N" where N counts every request since it started (kept in memory).
Usage: asyncio-server.py PORT [ADDR]"""
import asyncio
import sys

count = 0


async def serve(reader, writer):
    global count
    try:
        while line := await reader.readline():
            count += 1
            writer.write(f"count {count} {line.decode().strip()}\n".encode())
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(
        serve, sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1", int(sys.argv[1])
    )
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
