"""Property-based fuzzing of both ends of the protocol over real ZeroMQ sockets.

The server side: a real :class:`InstrumentServer` (in its own thread and event loop) gets
frames that hypothesis generates: random bytes, non-UTF-8 text, truncated and deeply nested
JSON, envelopes with wrong protocol versions, unknown types and bad ids, bodies with wrong
types and huge numbers, multipart garbage and oversized frames. Every frame must get exactly
one structured reply (never the catch-all ``internal`` error), the server's tasks must stay
alive, and it must still answer ``describe`` afterwards.

The client side: a fake server answers each request of a real :class:`InstrumentClient`
with generated garbage; every call must return normally or raise
:class:`~models.errors.InstrumentError`, never anything else.

The counts (inputs tried, crashes) are printed at the end of the module for
``docs/reliability.md``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import zmq
import zmq.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instruments.client import InstrumentClient
from instruments.driver import ActionSpec, Driver, OutputSpec, ParameterLimit
from instruments.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ERROR_CODES,
    INTERNAL,
    PROTOCOL_VERSION,
    decode_message,
    encode_message,
)
from instruments.server import InstrumentServer
from models.errors import InstrumentError
from models.records import Measurement
from tests.integration.helpers import record_figures

COUNTS: Counter[str] = Counter()
"""``server.inputs``, ``server.crashes``, ``client.replies``, ``client.crashes``."""

FUZZ = settings(
    derandomize=True,  # the same inputs on every run: the figures quoted are reproducible
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class QuickDriver(Driver):
    """Adds ``a + b`` at once (``a`` in [-10, 10]); nothing it accepts can block the server."""

    driver_name = "fuzz-quick"
    version = "1"

    def actions(self) -> list[ActionSpec]:
        return [
            ActionSpec(
                name="add",
                parameters=[
                    ParameterLimit(name="a", minimum=-10, maximum=10),
                    ParameterLimit(name="b", type="integer", required=False),
                    ParameterLimit(name="tag", type="string", choices=["x", "y"], required=False),
                ],
                outputs=[OutputSpec(name="sum")],
            )
        ]

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        return [Measurement("sum", float(parameters["a"]) + float(parameters.get("b", 0)))]


class ServerThread:
    """An instrument server in its own thread, event loop and ZeroMQ context."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.endpoint = ""
        self.server: InstrumentServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        ctx = zmq.asyncio.Context()
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.server = InstrumentServer(QuickDriver("fuzzed"), "tcp://127.0.0.1:*", context=ctx)
        self.endpoint = await self.server.start()
        self.ready.set()
        await self._stop.wait()
        await self.server.stop()
        ctx.destroy(linger=0)

    def alive(self) -> bool:
        """Whether the server's receive loop and worker are still running."""
        assert self.server is not None
        tasks = self.server._tasks
        return self._thread.is_alive() and len(tasks) == 2 and not any(t.done() for t in tasks)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self.ready.wait(30), "server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread() as srv:
        yield srv
    record_figures(
        "protocol-fuzz",
        {
            "server_inputs": COUNTS["server.inputs"],
            "server_crashes": COUNTS["server.crashes"],
            "client_replies": COUNTS["client.replies"],
            "client_crashes": COUNTS["client.crashes"],
        },
    )
    print(
        f"\nprotocol fuzz, server: {COUNTS['server.inputs']} malformed inputs, "
        f"{COUNTS['server.crashes']} crashes; client: {COUNTS['client.replies']} garbage "
        f"replies, {COUNTS['client.crashes']} crashes"
    )


class Peer:
    """A raw DEALER socket that sends frames and reads the single reply."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 5000)
        self.sock.connect(endpoint)

    def ask(self, frames: list[bytes]) -> list[bytes]:
        self.sock.send_multipart(frames)
        return self.sock.recv_multipart()

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


@pytest.fixture(scope="module")
def peer(server: ServerThread) -> Iterator[Peer]:
    p = Peer(server.endpoint)
    yield p
    p.close()


def describe_ok(p: Peer) -> bool:
    reply = p.ask([encode_message("describe", "check", {})])
    msg = decode_message(reply[-1])
    return msg.type == "describe.reply" and msg.body["name"] == "fuzzed"


# --------------------------------------------------------------------------- strategies

huge = st.integers(min_value=10**300, max_value=10**4000) | st.integers(
    max_value=-(10**300), min_value=-(10**4000)
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | huge
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=12,
)
ids = st.sampled_from(["r-1", "r-2", "x" * 129, ""]) | st.text(max_size=20) | json_values
request_bodies = st.fixed_dictionaries(
    {},
    optional={
        "request_id": ids,
        "action": st.sampled_from(["add", "nope", ""]) | json_values,
        "parameters": st.dictionaries(
            st.sampled_from(["a", "b", "tag", "zzz"]), json_values, max_size=4
        )
        | json_values,
        "wait_s": st.sampled_from([0, 0.01, -1, 1e308]) | huge | json_values,
    },
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "protocol": st.sampled_from([PROTOCOL_VERSION, "sdlab/2", "sdlab/0", "", "SDLAB/1"])
        | json_values,
        "type": st.sampled_from(
            ["describe", "submit", "status", "cancel", "heartbeat", "error", "submit.reply", ""]
        )
        | st.text(max_size=30)
        | json_values,
        "id": ids,
        "body": request_bodies | json_values,
    },
)


def _nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def _as_envelope(inner: bytes) -> bytes:
    head = b'{"protocol":"sdlab/1","type":"submit","id":"n","body":{"request_id":"n",'
    return head + b'"action":"add","parameters":' + inner + b"}}"


nested = st.builds(
    _nested, st.integers(min_value=1, max_value=100_000), st.sampled_from(["list", "dict"])
)
encodings = st.sampled_from(["utf-8", "utf-16", "latin-1"])


@st.composite
def frames(draw: st.DrawFn) -> list[bytes]:
    """One generated input: usually one frame, sometimes several."""
    kind = draw(st.sampled_from(["bytes", "envelope", "mangled", "nested", "number", "multi"]))
    if kind == "bytes":
        return [draw(st.binary(max_size=300))]
    if kind == "nested":
        inner = draw(nested)
        return [draw(st.sampled_from([inner, _as_envelope(inner)]))]
    if kind == "number":
        digits = draw(st.integers(min_value=300, max_value=20_000))
        exp = draw(st.sampled_from(["", "e999999", ".5e-999999"]))
        return [_as_envelope(b'{"a":' + b"9" * digits + exp.encode() + b"}")]
    text = json.dumps(draw(envelopes), ensure_ascii=False)
    data = text.encode(draw(encodings), errors="replace")
    if kind == "mangled":
        cut = draw(st.integers(min_value=0, max_value=len(data)))
        data = data[:cut] + draw(st.binary(max_size=8)) + data[cut + 1 :]
    if kind == "multi":
        return [*draw(st.lists(st.binary(max_size=30), min_size=1, max_size=4)), data]
    return [data]


# --------------------------------------------------------------------------- server side


@FUZZ
@given(inp=frames())
def test_every_malformed_input_gets_one_structured_error(
    server: ServerThread, peer: Peer, inp: list[bytes]
) -> None:
    COUNTS["server.inputs"] += 1
    reply = peer.ask(inp)
    assert reply[:-1] == inp[:-1]  # the envelope comes back unchanged
    msg = json.loads(reply[-1])  # not decode_message: an error's id may be null
    assert msg["protocol"] == PROTOCOL_VERSION
    assert msg["id"] is None or isinstance(msg["id"], str)
    assert isinstance(msg["body"], dict)
    if msg["type"] == "error":
        assert msg["body"]["code"] in ERROR_CODES
        assert msg["body"]["code"] != INTERNAL, msg["body"]  # the catch-all: a handler broke
    else:
        assert msg["type"].endswith(".reply")
    if not server.alive():
        COUNTS["server.crashes"] += 1
    assert server.alive()


def test_the_server_still_answers_after_the_fuzzing(server: ServerThread, peer: Peer) -> None:
    assert server.alive()
    assert describe_ok(peer)


@pytest.mark.parametrize("size", [DEFAULT_MAX_MESSAGE_BYTES + 1, 5 * DEFAULT_MAX_MESSAGE_BYTES])
def test_oversized_frames_are_refused_or_dropped_and_the_server_goes_on(
    server: ServerThread, size: int
) -> None:
    COUNTS["server.inputs"] += 1
    big = Peer(server.endpoint)
    big.sock.setsockopt(zmq.RCVTIMEO, 1000)
    try:
        big.sock.send(b"{" + b" " * size + b"}")
        try:
            msg = json.loads(big.sock.recv())
            assert msg["body"]["code"] == "message_too_large"
        except zmq.Again:
            # over ZMQ_MAXMSGSIZE: libzmq drops the connection without a reply
            assert size > 4 * DEFAULT_MAX_MESSAGE_BYTES
    finally:
        big.close()
    fresh = Peer(server.endpoint)
    try:
        assert describe_ok(fresh)
    finally:
        fresh.close()
    assert server.alive()


# --------------------------------------------------------------------------- client side

CALLS = ["describe", "submit", "status", "cancel", "heartbeat"]


def _mutate(draw: st.DrawFn, base: dict[str, Any], values: st.SearchStrategy[Any]) -> None:
    """Replace or delete up to two keys of ``base`` (so most of it stays valid)."""
    for key in draw(st.lists(st.sampled_from(sorted(base)), max_size=2, unique=True)):
        if draw(st.booleans()):
            del base[key]
        else:
            base[key] = draw(values)


numbers = st.floats(allow_nan=False, allow_infinity=False) | huge | json_values
times = (
    st.sampled_from(
        ["2025-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "x"]
    )
    | json_values
)


@st.composite
def request_states(draw: st.DrawFn) -> dict[str, Any]:
    measurement = {"name": "sum", "value": draw(numbers), "uncertainty": draw(numbers)}
    _mutate(draw, measurement, json_values)
    error = {"code": "jammed", "message": "m", "field": None, "retryable": True}
    _mutate(draw, error, json_values)
    state = {
        "request_id": "req-1",
        "action": "add",
        "parameters": {"a": 1},
        "state": draw(st.sampled_from(["queued", "completed", "failed", "weird"])),
        "submitted_at": draw(times),
        "started_at": draw(st.none() | times),
        "finished_at": draw(st.none() | times),
        "measurements": [measurement],
        "error": draw(st.none() | st.just(error)),
    }
    _mutate(draw, state, json_values | st.just("other"))
    return state


@st.composite
def descriptions(draw: st.DrawFn) -> dict[str, Any]:
    limit = {"name": "a", "type": "number", "minimum": draw(numbers), "maximum": draw(numbers)}
    _mutate(draw, limit, json_values)
    action = {"name": "add", "parameters": [limit], "outputs": [{"name": "sum"}]}
    _mutate(draw, action, json_values)
    body = {"name": "n", "driver": "d", "driver_version": "1", "actions": [action]}
    _mutate(draw, body, json_values)
    return body


@st.composite
def garbage_replies(draw: st.DrawFn, message_id: str, mtype: str) -> list[bytes]:
    """A reply to one request that carries its id but is wrong in some way."""
    error = {"code": "jammed", "message": "m", "field": None, "retryable": False}
    _mutate(draw, error, json_values)
    body = draw(
        st.builds(lambda r: {"request": r}, request_states())
        | descriptions()
        | st.just(error)
        | json_values
    )
    obj = {
        "protocol": PROTOCOL_VERSION,
        "type": draw(st.sampled_from([f"{mtype}.reply", "error"])),
        "body": body,
    }
    _mutate(draw, obj, st.sampled_from(["sdlab/9", "describe.reply", "x"]) | json_values)
    # the id stays: a reply without a readable id is dropped and the call times out, which
    # test_unreadable_replies_end_in_a_timeout_error covers
    obj["id"] = message_id
    text = json.dumps(obj, ensure_ascii=False)
    if draw(st.booleans()):
        text = text.replace(f'"id": "{message_id}"', f'"id": "{message_id}", "x": 1e999')
    extra = draw(st.lists(st.binary(max_size=10), max_size=2))
    return [*extra, text.encode()]


async def _call(client: InstrumentClient, name: str) -> object:
    if name == "describe":
        return await client.describe()
    if name == "submit":
        return await client.submit("req-1", "add", {"a": 1})
    if name == "status":
        return await client.status("req-1")
    if name == "cancel":
        return await client.cancel("req-1")
    return await client.heartbeat()


ID_MARK = "@@message-id@@"
"""Stands for the request's message id in a generated reply, replaced when it is sent."""


@FUZZ
@given(call=st.sampled_from(CALLS), data=st.data())
def test_a_server_that_answers_garbage_gives_the_client_an_instrument_error(
    call: str, data: st.DataObject
) -> None:
    template = data.draw(garbage_replies(ID_MARK, call))

    async def go() -> None:
        ctx = zmq.asyncio.Context()
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        port = router.bind_to_random_port("tcp://127.0.0.1")

        async def answer() -> None:
            identity, request = await router.recv_multipart()
            mid = decode_message(request).id.encode()
            await router.send_multipart(
                [identity, *(f.replace(b"@@message-id@@", mid) for f in template)]
            )

        responder = asyncio.create_task(answer())
        client = InstrumentClient(f"tcp://127.0.0.1:{port}", timeout_s=1, context=ctx)
        COUNTS["client.replies"] += 1
        try:
            await _call(client, call)
        except InstrumentError:
            pass
        except Exception:
            COUNTS["client.crashes"] += 1
            raise
        finally:
            await client.close()
            responder.cancel()
            router.close(linger=0)
            ctx.destroy(linger=0)

    asyncio.run(go())


@settings(max_examples=10, deadline=None, derandomize=True)
@given(reply=st.lists(st.binary(max_size=50), min_size=1, max_size=3))
def test_unreadable_replies_end_in_a_timeout_error(reply: list[bytes]) -> None:
    async def go() -> None:
        ctx = zmq.asyncio.Context()
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        port = router.bind_to_random_port("tcp://127.0.0.1")

        async def answer() -> None:
            identity, _ = await router.recv_multipart()
            await router.send_multipart([identity, *reply])

        responder = asyncio.create_task(answer())
        client = InstrumentClient(f"tcp://127.0.0.1:{port}", timeout_s=0.2, context=ctx)
        COUNTS["client.replies"] += 1
        try:
            with pytest.raises(InstrumentError):
                await client.heartbeat()
        finally:
            await client.close()
            responder.cancel()
            router.close(linger=0)
            ctx.destroy(linger=0)

    asyncio.run(go())
