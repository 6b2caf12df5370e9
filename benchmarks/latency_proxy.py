"""A TCP proxy on loopback that adds a fixed latency in each direction.

It stands in for a database on another host: every chunk of bytes read from one side is
written to the other ``delay_ms`` later, in order, so a round trip through the proxy takes
twice the delay more than without it (bandwidth is not limited).

Usage:  python -m benchmarks.latency_proxy --target 127.0.0.1:5432 --delay-ms 5

It prints ``{"port": N}`` on one line once it listens (on ``127.0.0.1``, port ``--port``, by
default a free one), and runs until it is terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay_s`` after it was read."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        while True:
            data = await reader.read(65536)
            queue.put_nowait((time.monotonic() + delay_s, data))
            if not data:
                break
        await sender
    except (ConnectionError, asyncio.CancelledError):
        sender.cancel()
    finally:
        with contextlib.suppress(RuntimeError):
            writer.close()


async def serve(target_host: str, target_port: int, delay_s: float, port: int = 0) -> None:
    """Listen on ``127.0.0.1:port`` and proxy every connection to the target."""

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            _pipe(client_r, server_w, delay_s),
            _pipe(server_r, client_w, delay_s),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": bound}), flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="127.0.0.1:5432", help="HOST:PORT to forward to")
    ap.add_argument("--delay-ms", type=float, default=5.0, help="added latency each way")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    args = ap.parse_args()
    host, _, port = args.target.rpartition(":")
    try:
        asyncio.run(serve(host or "127.0.0.1", int(port), args.delay_ms / 1000, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
