#!/usr/bin/python3
"""An asyncio server on a unix socket with a path: answers each connection
with "count N", N counting connections since it started (in memory).
Usage: unix-server.py PATH"""
import asyncio
import sys

count = 0


async def serve(reader, writer):
    global count
    count += 1
    writer.write(f"count {count}\n".encode())
    await writer.drain()
    writer.close()


async def main():
    server = await asyncio.start_unix_server(serve, sys.argv[1])
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
