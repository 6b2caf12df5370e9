"""Status requests per second that a running step sends to a server that ignores ``wait_s``.

``docs/protocol.md`` lets a server answer a long poll at once. The step loop asks for the
state of its request with ``wait_s = 1`` (``controller.steps.POLL_S``) again as soon as an
answer says "still running"; against such a server that used to be a busy loop. The client
now backs off when an answer comes early (50 ms, doubling up to ``wait_s``).

Measured in one run, the same loop against the same server (a raw ZeroMQ ROUTER in its own
thread that answers every ``status`` at once, "running" until the action ends):

* **before**: the client with the backoff off (``poll_backoff_s=None``), as the loop was;
* **after**: the client as the controller builds it;
* **reference**: the reference server, which honours ``wait_s`` (what a step costs there).

For each: status requests per second while the action runs, and how late the end of the
action is noticed (what the backoff costs: at most one ``wait_s``).

Usage:  python -m benchmarks.poll_backoff [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Mapping
from typing import Any

import zmq
import zmq.asyncio

from controller.steps import POLL_S
from instruments.client import InstrumentClient
from instruments.driver import ActionSpec, Driver, ParameterLimit
from instruments.protocol import decode_message, encode_message, format_timestamp, utc_now
from instruments.server import InstrumentServer
from models.records import Measurement


class EagerServer:
    """A server that ignores ``wait_s``: every ``status`` is answered at once.

    The request runs for ``run_s`` seconds from the first ``status``; the server counts the
    requests it answers and notes when the request became terminal.
    """

    def __init__(self, run_s: float) -> None:
        self.run_s = run_s
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.requests = 0
        self.started: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def finished(self) -> float:
        """``time.monotonic()`` at which the request became terminal."""
        assert self.started is not None
        return self.started + self.run_s

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(50):
                continue
            ident, frame = self.socket.recv_multipart()
            msg = decode_message(frame)
            now = time.monotonic()
            if self.started is None:
                self.started = now
            self.requests += 1
            done = now >= self.finished
            state = {
                "request_id": msg.body["request_id"],
                "action": "anneal",
                "parameters": {},
                "state": "completed" if done else "running",
                "submitted_at": format_timestamp(utc_now()),
                "finished_at": format_timestamp(utc_now()) if done else None,
            }
            reply = encode_message(f"{msg.type}.reply", msg.id, {"request": state})
            self.socket.send_multipart([ident, reply])

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close(linger=0)
        self.context.term()


class Sleeper(Driver):
    """An action that takes ``seconds`` seconds."""

    driver_name = "bench-sleeper"

    def actions(self) -> list[ActionSpec]:
        return [ActionSpec(name="anneal", parameters=[ParameterLimit(name="seconds")])]

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        await asyncio.sleep(parameters["seconds"])
        return []


async def follow(client: InstrumentClient, request_id: str) -> tuple[int, float]:
    """The step loop's polling (``controller.steps``): ``status`` with ``wait_s = POLL_S``
    until terminal. Returns the number of calls and ``time.monotonic()`` when the end was
    seen."""
    calls = 1
    while not (await client.status(request_id, wait_s=POLL_S)).terminal:
        calls += 1
    return calls, time.monotonic()


async def eager(seconds: float, backoff: bool) -> tuple[float, float]:
    server = EagerServer(seconds)
    options: dict[str, Any] = {} if backoff else {"poll_backoff_s": None}
    client = InstrumentClient(server.endpoint, timeout_s=10.0, **options)
    try:
        calls, seen = await follow(client, "exp-1-step-0")
    finally:
        await client.close()
        server.close()
    assert calls == server.requests
    return calls / seconds, seen - server.finished


async def reference(seconds: float) -> tuple[float, float]:
    server = InstrumentServer(Sleeper("ref"), "tcp://127.0.0.1:*")
    endpoint = await server.start()
    client = InstrumentClient(endpoint, timeout_s=10.0)
    try:
        submitted = time.monotonic()
        await client.submit("exp-1-step-0", "anneal", {"seconds": seconds})
        calls, seen = await follow(client, "exp-1-step-0")
    finally:
        await client.close()
        await server.stop()
    return calls / seconds, seen - (submitted + seconds)  # includes the action's start-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the action runs")
    args = parser.parse_args()
    rows = [
        ("before: server ignores wait_s, no backoff", asyncio.run(eager(args.seconds, False))),
        ("after: server ignores wait_s, backoff", asyncio.run(eager(args.seconds, True))),
        ("reference: server honours wait_s", asyncio.run(reference(args.seconds))),
    ]
    print(f"one step polled with wait_s = {POLL_S:g} s; the action runs {args.seconds:g} s")
    print(f"{'':44} {'status/s':>10} {'end seen after':>15}")
    for label, (rate, late_s) in rows:
        print(f"{label:44} {rate:10.1f} {late_s * 1000:12.0f} ms")


if __name__ == "__main__":
    main()
