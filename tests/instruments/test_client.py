"""What the reference client does with servers that bend the protocol, over real sockets.

A raw ROUTER peer plays the server: one that ignores ``wait_s``, one that sends a
description breaking the schema, one whose heartbeat is malformed, one whose clock is off.
"""

from __future__ import annotations

import asyncio
import itertools
import pickle
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import zmq
import zmq.asyncio

from instruments.client import FIRST_POLL_S, InstrumentClient, InstrumentReplyError
from instruments.protocol import Message, decode_message, encode_message, format_timestamp
from tests.instruments.test_server_client import AdderDriver, run, serving

Answer = Callable[[Message], tuple[str, dict[str, Any]]]


@asynccontextmanager
async def peer(answer: Answer) -> AsyncIterator[tuple[str, list[float]]]:
    """A raw ROUTER that answers each request at once with ``answer(msg)``.

    Yields its endpoint and the ``time.monotonic()`` of each request it received.
    """
    ctx = zmq.asyncio.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:*")
    arrivals: list[float] = []

    async def serve() -> None:
        while True:
            ident, frame = await sock.recv_multipart()
            arrivals.append(time.monotonic())
            msg = decode_message(frame)
            rtype, body = answer(msg)
            await sock.send_multipart([ident, encode_message(rtype, msg.id, body)])

    task = asyncio.create_task(serve())
    try:
        yield sock.getsockopt_string(zmq.LAST_ENDPOINT), arrivals
    finally:
        task.cancel()
        sock.close(linger=0)


def _running(msg: Message) -> tuple[str, dict[str, Any]]:
    """A server that ignores ``wait_s``: the request is always still running."""
    state = {
        "request_id": msg.body["request_id"],
        "action": "add",
        "parameters": {},
        "state": "running",
        "submitted_at": "2025-05-01T08:00:00Z",
    }
    return f"{msg.type}.reply", {"request": state}


def test_early_long_poll_answers_back_off_doubling_up_to_wait_s() -> None:
    async def body() -> None:
        async with peer(_running) as (endpoint, arrivals):
            client = InstrumentClient(endpoint, timeout_s=5.0)
            try:
                for _ in range(6):
                    state = await client.status("r1", wait_s=0.4)
                    assert not state.terminal
                gaps = [b - a for a, b in itertools.pairwise(arrivals)]
                expected = [FIRST_POLL_S, 2 * FIRST_POLL_S, 4 * FIRST_POLL_S, 0.4, 0.4]
                assert len(gaps) == len(expected)
                # each pause is at least the backoff asked (asyncio never wakes early)
                assert all(g >= 0.9 * e for g, e in zip(gaps, expected, strict=True)), gaps
                assert client.backoff_s("r1") == 0.4
                # another request starts without a pause: its arrival count still grows
                await client.status("r2", wait_s=0.4)
                assert len(arrivals) == 7
            finally:
                await client.close()

    run(body)


def test_without_wait_s_or_with_backoff_off_nothing_is_paused() -> None:
    async def body() -> None:
        async with peer(_running) as (endpoint, arrivals):
            plain = InstrumentClient(endpoint, timeout_s=5.0)
            off = InstrumentClient(endpoint, timeout_s=5.0, poll_backoff_s=None)
            try:
                for _ in range(20):  # no long poll asked: nothing to back off from
                    await plain.status("r1")
                for _ in range(20):
                    await off.status("r1", wait_s=0.4)
                assert len(arrivals) == 40
                assert plain.backoff_s("r1") is None
                assert off.backoff_s("r1") is None
            finally:
                await plain.close()
                await off.close()

    run(body)


def test_a_server_that_honours_wait_s_is_not_paused() -> None:
    async def body() -> None:
        async with serving(AdderDriver()) as (_, client):
            await client.submit("slow", "add", {"a": 1, "b": 1, "sleep_s": 30})
            for _ in range(3):  # each long poll uses its window: not early, no backoff
                assert not (await client.status("slow", wait_s=0.1)).terminal
            assert client.backoff_s("slow") is None
            await client.cancel("slow")

    run(body)


def test_a_refused_description_names_the_key_and_says_what_happened() -> None:
    def answer(msg: Message) -> tuple[str, dict[str, Any]]:
        action = {"name": "add", "timeout_s": -1}
        return "describe.reply", {"name": "x", "driver": "d", "driver_version": "1",
                                  "actions": [action]}  # fmt: skip

    async def body() -> None:
        async with peer(answer) as (endpoint, _):
            client = InstrumentClient(endpoint, name="x", timeout_s=5.0)
            try:
                with pytest.raises(InstrumentReplyError) as info:
                    await client.describe()
                assert info.value.code == "bad_message"
                assert info.value.field == "actions[0].timeout_s"
                assert "refused the describe reply: actions[0].timeout_s:" in str(info.value)
                assert info.value.__cause__ is None  # no pydantic error inside
                back = pickle.loads(pickle.dumps(info.value))  # as Ray sends it on
                assert (type(back), str(back), back.field) == (
                    InstrumentReplyError,
                    str(info.value),
                    "actions[0].timeout_s",
                )
            finally:
                await client.close()

    run(body)


@pytest.mark.parametrize(
    ("change", "field"),
    [({"uptime_s": "long"}, "uptime_s"), ({"time": "yesterday"}, "time"),
     ({"uptime_s": -1}, "uptime_s"), ({"busy_with": "r1"}, "busy_with")],
)  # fmt: skip
def test_a_malformed_heartbeat_names_the_key(change: dict[str, Any], field: str) -> None:
    def answer(msg: Message) -> tuple[str, dict[str, Any]]:
        return "heartbeat.reply", {"name": "x", "state": "idle", "uptime_s": 1.0, **change}

    async def body() -> None:
        async with peer(answer) as (endpoint, _):
            client = InstrumentClient(endpoint, name="x", timeout_s=5.0)
            try:
                with pytest.raises(InstrumentReplyError) as info:
                    await client.heartbeat_report()
                assert (info.value.code, info.value.field) == ("bad_message", field)
                assert "refused the heartbeat reply" in str(info.value)
            finally:
                await client.close()

    run(body)


def test_the_heartbeat_report_compares_the_clocks() -> None:
    ahead = timedelta(minutes=5)

    def answer(msg: Message) -> tuple[str, dict[str, Any]]:
        now = format_timestamp(datetime.now(UTC) + ahead)
        return "heartbeat.reply", {"name": "x", "state": "idle", "time": now, "uptime_s": 3}

    async def body() -> None:
        async with peer(answer) as (endpoint, _):
            client = InstrumentClient(endpoint, name="x", timeout_s=5.0)
            try:
                report = await client.heartbeat_report()
                assert report.beat.uptime_s == 3
                assert report.clock_skew_s is not None
                assert abs(report.clock_skew_s - ahead.total_seconds()) < 5
            finally:
                await client.close()
        async with serving(AdderDriver()) as (_, client):
            report = await client.heartbeat_report()
            assert report.clock_skew_s is not None
            assert abs(report.clock_skew_s) < 5
            assert report.beat.uptime_s is not None
            assert report.beat.uptime_s >= 0

    run(body)
