"""The floor for the RPC benchmark: a bare asyncio Unix-socket line echo, no JSON, no dispatch."""

import asyncio
import os
import sys


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            line = await reader.readuntil(b"\n")
            writer.write(line)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def main(path: str) -> None:
    server = await asyncio.start_unix_server(handle, path=path, limit=1 << 20)
    os.chmod(path, 0o600)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
