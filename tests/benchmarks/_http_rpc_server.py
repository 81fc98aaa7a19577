"""The same JSON-RPC call served as JSON over HTTP/1.1 (keep-alive) on loopback, for comparison.

It dispatches through the very same BaseService code (param validation, method, encoding); only
the transport differs: HTTP framing over TCP instead of newline framing over a Unix socket.
"""

import asyncio
import sys
from pathlib import Path

from services.base.rpc import RpcServer
from tests.service._demo_service import DemoService


async def main(port: int) -> None:
    service = DemoService()
    codec = RpcServer(Path("/nonexistent"), service.dispatch)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                reply = await codec.handle_frame(body) or b""
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(reply)).encode()
                    + b"\r\n\r\n"
                    + reply
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
