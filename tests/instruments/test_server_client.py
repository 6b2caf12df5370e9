"""InstrumentServer and InstrumentClient over real ZeroMQ sockets on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from instruments.client import InstrumentClient, InstrumentReplyError
from instruments.driver import ActionSpec, Driver, OutputSpec, ParameterLimit
from instruments.protocol import PROTOCOL_VERSION, RequestStatus, decode_message, encode_message
from instruments.server import InstrumentServer
from models.errors import InstrumentError, InstrumentTimeoutError
from models.records import Measurement

LOOPBACK = "tcp://127.0.0.1:*"


class AdderDriver(Driver):
    """Adds ``a + b`` (``a`` limited to [-10, 10]), optionally sleeping ``sleep_s`` first."""

    driver_name = "test-adder"
    version = "1.2"

    def __init__(self, name: str = "adder") -> None:
        super().__init__(name)
        self.executed: list[str] = []  # request parameters' "tag" or action, in run order
        self.cancelled = 0
        self.active = 0
        self.max_active = 0

    def actions(self) -> list[ActionSpec]:
        return [
            ActionSpec(
                name="add",
                parameters=[
                    ParameterLimit(name="a", minimum=-10, maximum=10, unit="V"),
                    ParameterLimit(name="b"),
                    ParameterLimit(name="sleep_s", minimum=0, maximum=30, unit="s", required=False),
                    ParameterLimit(name="tag", type="string", required=False),
                ],
                outputs=[OutputSpec(name="sum", unit="V")],
                timeout_s=5,
                retry_safe=True,
            ),
            ActionSpec(
                name="fail",
                parameters=[
                    ParameterLimit(
                        name="how", type="string", choices=["instrument", "crash", "nan"]
                    )
                ],
            ),
        ]

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        self.executed.append(str(parameters.get("tag", action)))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if action == "fail":
                if parameters["how"] == "instrument":
                    raise InstrumentError(self.name, "jammed", "sample stuck", retryable=True)
                if parameters["how"] == "nan":
                    return [Measurement("sum", float("nan"))]
                raise RuntimeError("boom")
            if parameters.get("sleep_s"):
                await asyncio.sleep(parameters["sleep_s"])
            return [Measurement("sum", parameters["a"] + parameters["b"], 0.0, "V")]
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1


@asynccontextmanager
async def serving(
    driver: Driver, **options: Any
) -> AsyncIterator[tuple[InstrumentServer, InstrumentClient]]:
    server = InstrumentServer(driver, LOOPBACK, **options)
    endpoint = await server.start()
    client = InstrumentClient(endpoint, name=driver.name, timeout_s=5.0)
    try:
        yield server, client
    finally:
        await client.close()
        await server.stop()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


async def _until_running(client: InstrumentClient, request_id: str) -> None:
    for _ in range(500):
        if (await client.status(request_id)).state is RequestStatus.RUNNING:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{request_id} never started")


def test_describe() -> None:
    async def body() -> None:
        async with serving(AdderDriver("adder-1")) as (server, client):
            assert server.endpoint.startswith("tcp://127.0.0.1:")
            desc = await client.describe()
            assert (desc.name, desc.driver, desc.driver_version) == ("adder-1", "test-adder", "1.2")
            assert desc.protocol == PROTOCOL_VERSION
            assert desc.action("add").parameters[0].maximum == 10

    run(body)


def test_submit_and_wait_for_result() -> None:
    async def body() -> None:
        driver = AdderDriver()
        async with serving(driver) as (_, client):
            state = await client.submit("r1", "add", {"a": 1, "b": 2.5}, wait_s=5)
            assert state.state is RequestStatus.COMPLETED
            assert state.terminal
            assert state.measurements == [Measurement("sum", 3.5, 0.0, "V")]
            assert state.submitted_at <= state.started_at <= state.finished_at  # type: ignore[operator]
            # without a long poll the reply comes at once; wait() long-polls to the end
            state = await client.submit("r2", "add", {"a": 2, "b": 2, "sleep_s": 0.2})
            assert state.state in (RequestStatus.QUEUED, RequestStatus.RUNNING)
            done = await client.wait("r2", timeout_s=10, poll_s=0.05)
            assert done.measurements[0].value == 4.0
            # a wait that runs out of time raises, and the request goes on
            await client.submit("r3", "add", {"a": 0, "b": 0, "sleep_s": 30})
            with pytest.raises(InstrumentTimeoutError) as info:
                await client.wait("r3", timeout_s=0.1, poll_s=0.05)
            assert info.value.request_id == "r3"
            assert (await client.cancel("r3")).state is RequestStatus.CANCELLED

    run(body)


def test_idempotent_submit_runs_once() -> None:
    async def body() -> None:
        driver = AdderDriver()
        async with serving(driver) as (_, client):
            params = {"a": 1, "b": 1, "sleep_s": 0.05, "tag": "once"}
            first, again = await asyncio.gather(
                client.submit("r1", "add", params), client.submit("r1", "add", params)
            )
            assert first.request_id == again.request_id == "r1"
            done = await client.submit("r1", "add", params, wait_s=5)
            repeat = await client.submit("r1", "add", dict(params), wait_s=5)
            assert done == repeat
            assert done.state is RequestStatus.COMPLETED
            assert driver.executed == ["once"]

    run(body)


def test_request_id_conflict() -> None:
    async def body() -> None:
        driver = AdderDriver()
        async with serving(driver) as (_, client):
            await client.submit("r1", "add", {"a": 1, "b": 1}, wait_s=5)
            with pytest.raises(InstrumentReplyError) as info:
                await client.submit("r1", "add", {"a": 1, "b": 2})
            assert (info.value.code, info.value.field) == ("request_id_conflict", "request_id")
            assert info.value.request_id == "r1"
            with pytest.raises(InstrumentError, match="request_id_conflict"):
                await client.submit("r1", "fail", {"how": "crash"})
            assert driver.executed == ["add"]

    run(body)


def test_refusals_before_the_driver_is_called() -> None:
    async def body() -> None:
        driver = AdderDriver()
        async with serving(driver) as (_, client):
            cases = [
                ("add", {"a": 11, "b": 0}, "parameter_out_of_limits", "parameters.a"),
                ("add", {"a": "1", "b": 0}, "parameter_out_of_limits", "parameters.a"),
                ("add", {"a": 1}, "parameter_out_of_limits", "parameters.b"),
                ("add", {"a": 1, "b": 0, "c": 3}, "parameter_out_of_limits", "parameters.c"),
                ("fail", {"how": "gently"}, "parameter_out_of_limits", "parameters.how"),
                ("explode", {}, "unknown_action", "action"),
            ]
            for i, (action, params, code, field) in enumerate(cases):
                with pytest.raises(InstrumentReplyError) as info:
                    await client.submit(f"bad-{i}", action, params, wait_s=1)
                assert (info.value.code, info.value.field) == (code, field)
                assert not info.value.retryable
            assert driver.executed == []
            # a refused request is not recorded
            with pytest.raises(InstrumentReplyError) as unknown:
                await client.status("bad-0")
            assert unknown.value.code == "unknown_request"
            with pytest.raises(InstrumentReplyError) as unknown:
                await client.cancel("never-submitted")
            assert (unknown.value.code, unknown.value.field) == ("unknown_request", "request_id")

    run(body)


def test_driver_failures_become_failed_requests() -> None:
    async def body() -> None:
        async with serving(AdderDriver()) as (_, client):
            jammed = await client.submit("f1", "fail", {"how": "instrument"}, wait_s=5)
            assert jammed.state is RequestStatus.FAILED
            assert jammed.error is not None
            assert (jammed.error.code, jammed.error.retryable) == ("jammed", True)
            assert jammed.measurements == []
            crashed = await client.submit("f2", "fail", {"how": "crash"}, wait_s=5)
            assert crashed.error is not None
            assert crashed.error.code == "internal"
            assert "boom" in crashed.error.message
            nan = await client.submit("f3", "fail", {"how": "nan"}, wait_s=5)
            assert nan.error is not None
            assert nan.error.code == "internal"
            ok = await client.submit("ok", "add", {"a": 1, "b": 1}, wait_s=5)
            assert ok.state is RequestStatus.COMPLETED

    run(body)


def test_fifo_one_at_a_time_and_concurrent_calls() -> None:
    async def body() -> None:
        driver = AdderDriver()
        async with serving(driver) as (_, client):
            tags = [f"t{i}" for i in range(12)]
            for tag in tags:  # submission order is the run order
                await client.submit(tag, "add", {"a": 1, "b": 0, "sleep_s": 0.005, "tag": tag})
            states = await asyncio.gather(*(client.wait(t, timeout_s=10) for t in reversed(tags)))
            assert all(s.state is RequestStatus.COMPLETED for s in states)
            assert driver.executed == tags
            assert driver.max_active == 1
            ordered = sorted(states, key=lambda s: s.started_at)  # type: ignore[arg-type,return-value]
            assert [s.request_id for s in ordered] == tags

    run(body)


def test_cancel_running_and_queued() -> None:
    async def body() -> None:
        driver = AdderDriver()
        async with serving(driver) as (_, client):
            await client.submit("long", "add", {"a": 1, "b": 1, "sleep_s": 30, "tag": "long"})
            await client.submit("next", "add", {"a": 1, "b": 1, "sleep_s": 30, "tag": "next"})
            await _until_running(client, "long")
            beat = await client.heartbeat()
            assert beat["state"] == "busy"
            assert beat["busy_with"] == ["long"]
            assert beat["queue_length"] == 1
            queued = await client.cancel("next")
            assert queued.state is RequestStatus.CANCELLED
            assert queued.started_at is None
            running = await client.cancel("long")
            assert running.state is RequestStatus.CANCELLED
            assert running.finished_at is not None
            assert (await client.cancel("long")) == running  # terminal: unchanged
            after = await client.submit("after", "add", {"a": 2, "b": 3}, wait_s=5)
            assert after.measurements[0].value == 5
            assert driver.executed == ["long", "add"]
            assert driver.cancelled == 1
            assert (await client.status("long")).state is RequestStatus.CANCELLED

    run(body)


def test_a_submit_that_arrives_after_its_cancel_never_runs(tmp_path: Path) -> None:
    # A client gave up on a request whose submit sat in a dead link and cancelled it when
    # the link came back; TCP then delivered the old submit. It must not run.
    journal = tmp_path / "adder.jsonl"

    async def body() -> None:
        driver = AdderDriver()
        async with serving(driver, journal_path=journal) as (_, client):
            with pytest.raises(InstrumentReplyError) as unknown:
                await client.cancel("late")
            assert unknown.value.code == "unknown_request"  # the reply is unchanged
            late = await client.submit("late", "add", {"a": 1, "b": 2}, wait_s=5)
            assert late.state is RequestStatus.CANCELLED
            assert late.started_at is None
            assert (await client.status("late")) == late
            assert (await client.submit("late", "add", {"a": 1, "b": 2})) == late
            # only that id: others run as ever, and the id is forgotten once used
            other = await client.submit("other", "add", {"a": 2, "b": 2}, wait_s=5)
            assert other.state is RequestStatus.COMPLETED
            assert driver.executed == ["add"]
        lines = [json.loads(line) for line in journal.read_text().splitlines()]
        assert [(j["request_id"], j["state"]) for j in lines if j["request_id"] == "late"] == [
            ("late", "cancelled")
        ]

    run(body)


def test_heartbeat_idle() -> None:
    async def body() -> None:
        async with serving(AdderDriver("hb")) as (_, client):
            beat = await client.heartbeat()
            assert beat["name"] == "hb"
            assert beat["state"] == "idle"
            assert beat["busy_with"] == []
            assert beat["queue_length"] == 0
            assert beat["time"].endswith("Z")
            assert beat["uptime_s"] >= 0

    run(body)


def test_journal_keeps_idempotency_across_restart(tmp_path: Path) -> None:
    journal = tmp_path / "journal" / "adder.jsonl"

    async def body() -> None:
        first = AdderDriver()
        async with serving(first, journal_path=journal) as (_, client):
            done = await client.submit("r1", "add", {"a": 1, "b": 2}, wait_s=5)
            failed = await client.submit("r2", "fail", {"how": "instrument"}, wait_s=5)
            await client.submit("lost", "add", {"a": 1, "b": 2, "sleep_s": 30})
            await client.submit("queued", "add", {"a": 1, "b": 1})  # waits behind "lost"
        assert first.executed == ["add", "fail", "add"]
        with journal.open("a") as f:  # a torn line, as a crash mid-write leaves
            f.write('{"request_id": "r9", "act')
        second = AdderDriver()
        async with serving(second, journal_path=journal) as (_, client):
            again = await client.submit("r1", "add", {"a": 1, "b": 2}, wait_s=5)
            assert again == done
            assert await client.status("r2") == failed
            with pytest.raises(InstrumentReplyError) as info:
                await client.submit("r1", "add", {"a": 5, "b": 2})
            assert info.value.code == "request_id_conflict"
            # "lost" was running when the server went away: it began and did not finish
            lost = await client.status("lost")
            assert lost.state == "failed"
            assert lost.error is not None
            assert lost.error.code == "interrupted"
            assert lost.error.retryable
            # "queued" never started: the restarted server does not know it
            with pytest.raises(InstrumentReplyError) as info:
                await client.status("queued")
            assert info.value.code == "unknown_request"
            assert second.executed == []

    run(body)


async def _raw_exchange(sock: zmq.asyncio.Socket, frame: bytes) -> dict[str, Any]:
    await sock.send(frame)
    reply = await asyncio.wait_for(sock.recv(), 5)
    obj = json.loads(reply)
    assert obj["protocol"] == PROTOCOL_VERSION
    return obj  # type: ignore[no-any-return]


def test_malformed_frames_get_error_replies() -> None:
    async def body() -> None:
        async with serving(AdderDriver(), max_message_bytes=4096) as (server, client):
            ctx = zmq.asyncio.Context.instance()
            raw = ctx.socket(zmq.DEALER)
            raw.setsockopt(zmq.LINGER, 0)
            raw.connect(server.endpoint)
            good = {"protocol": PROTOCOL_VERSION, "type": "heartbeat", "id": "m1", "body": {}}
            cases: list[tuple[bytes, str, str | None, str | None]] = [
                (b"not json at all", "bad_message", None, None),
                (b"\xff\x00", "bad_message", None, None),
                (b"[1, 2]", "bad_message", None, None),
                (json.dumps({**good, "id": None}).encode(), "bad_message", "id", None),
                (
                    json.dumps({**good, "protocol": "sdlab/0"}).encode(),
                    "unsupported_protocol",
                    "protocol",
                    "m1",
                ),
                (
                    json.dumps({k: v for k, v in good.items() if k != "body"}).encode(),
                    "bad_message",
                    "body",
                    "m1",
                ),
                (json.dumps({**good, "type": "reboot"}).encode(), "unknown_type", "type", "m1"),
                (
                    encode_message("submit", "m2", {"action": "add", "parameters": {}}),
                    "bad_message",
                    "request_id",
                    "m2",
                ),
                (
                    encode_message("status", "m3", {"request_id": "x", "wait_s": "soon"}),
                    "bad_message",
                    "wait_s",
                    "m3",
                ),
                (
                    encode_message("heartbeat", "m4", {"pad": "x" * 5000}),
                    "message_too_large",
                    None,
                    None,
                ),
            ]
            try:
                for frame, code, field, message_id in cases:
                    reply = await _raw_exchange(raw, frame)
                    assert reply["type"] == "error", frame
                    assert reply["id"] == message_id
                    assert reply["body"]["code"] == code, frame
                    assert reply["body"]["field"] == field
                    assert isinstance(reply["body"]["message"], str)
                    assert reply["body"]["retryable"] is False
                    assert (await client.heartbeat())["state"] == "idle"  # still serving
                ok = await _raw_exchange(raw, json.dumps(good).encode())
                assert (ok["type"], ok["id"]) == ("heartbeat.reply", "m1")
            finally:
                raw.close(linger=0)
            # REQ sockets (delimiter frame) work too
            req = ctx.socket(zmq.REQ)
            req.setsockopt(zmq.LINGER, 0)
            req.connect(server.endpoint)
            try:
                reply = await _raw_exchange(req, encode_message("describe", "q1", {}))
                assert reply["type"] == "describe.reply"
                assert reply["body"]["name"] == "adder"
            finally:
                req.close(linger=0)

    run(body)


def test_timeout_against_silent_server_then_recovery() -> None:
    async def body() -> None:
        ctx = zmq.asyncio.Context.instance()
        silent = ctx.socket(zmq.ROUTER)
        silent.setsockopt(zmq.LINGER, 0)
        silent.bind(LOOPBACK)
        endpoint = silent.getsockopt_string(zmq.LAST_ENDPOINT)
        received: list[list[bytes]] = []

        async def swallow() -> None:
            while True:
                received.append(await silent.recv_multipart())

        sink = asyncio.create_task(swallow())
        client = InstrumentClient(endpoint, name="mute", timeout_s=0.2)
        try:
            with pytest.raises(InstrumentTimeoutError) as info:
                await client.heartbeat()
            assert info.value.code == "timeout"
            assert info.value.retryable
            assert info.value.instrument == "mute"
            with pytest.raises(InstrumentTimeoutError) as info:
                await client.status("r1", wait_s=0.1)
            assert info.value.request_id == "r1"
            assert client.reconnects == 2
            assert len(received) >= 2
            sink.cancel()
            silent.close(linger=0)
            # a real server comes up on the same endpoint; the client recovers
            server = InstrumentServer(AdderDriver("back"), endpoint)
            for _ in range(200):  # libzmq releases the port asynchronously after close
                try:
                    await server.start()
                    break
                except zmq.ZMQError:
                    await asyncio.sleep(0.01)
            try:
                # a request written into the dying connection is lost: time out, retry
                client.timeout_s = 1.0
                for _ in range(5):
                    with contextlib.suppress(InstrumentTimeoutError):
                        beat = await client.heartbeat()
                        break
                assert beat["name"] == "back"
                state = await client.submit("r1", "add", {"a": 1, "b": 1}, wait_s=5)
                assert state.measurements[0].value == 2
            finally:
                await server.stop()
        finally:
            sink.cancel()
            silent.close(linger=0)
            await client.close()
        with pytest.raises(InstrumentError, match="closed"):
            await client.heartbeat()

    run(body)


def test_stale_and_malformed_replies() -> None:
    async def body() -> None:
        ctx = zmq.asyncio.Context.instance()
        fake = ctx.socket(zmq.ROUTER)
        fake.setsockopt(zmq.LINGER, 0)
        fake.bind(LOOPBACK)
        endpoint = fake.getsockopt_string(zmq.LAST_ENDPOINT)
        seen: list[str] = []

        async def answer() -> None:
            while True:
                ident, frame = await fake.recv_multipart()
                msg = decode_message(frame)
                seen.append(msg.id)
                if len(seen) == 1:
                    # first a reply to an id the client never sent, then garbage: neither can
                    # be matched to the waiting call, which is asked again at once each time
                    await fake.send_multipart(
                        [ident, encode_message("heartbeat.reply", "old-1", {})]
                    )
                    await fake.send_multipart([ident, b"\x00garbage"])
                    continue
                if msg.type == "status":
                    body = {"request": {"request_id": msg.body["request_id"], "state": "odd"}}
                    await fake.send_multipart([ident, encode_message("status.reply", msg.id, body)])
                elif msg.type == "describe":
                    await fake.send_multipart(
                        [ident, encode_message("heartbeat.reply", msg.id, {})]
                    )
                else:
                    reply = encode_message("heartbeat.reply", msg.id, {"name": "fake"})
                    await fake.send_multipart([ident, reply])

        task = asyncio.create_task(answer())
        # a call left to its timeout would fail this test with code "timeout"
        client = InstrumentClient(endpoint, name="fake", timeout_s=5.0)
        try:
            assert await client.heartbeat() == {"name": "fake"}
            assert client.bad_replies == 2
            assert seen[0] == seen[1] == seen[2]  # the same call, sent again twice
            with pytest.raises(InstrumentReplyError) as info:
                await client.status("r1")
            assert (info.value.code, info.value.field) == ("bad_message", "request.state")
            with pytest.raises(InstrumentReplyError) as info:
                await client.describe()
            assert info.value.code == "bad_message"
            assert client.reconnects == 0
            assert client.bad_replies == 2  # the duplicate heartbeat reply was stale: dropped
        finally:
            task.cancel()
            await client.close()
            fake.close(linger=0)

    run(body)


def test_a_server_that_only_garbles_fails_the_call_as_a_bad_message() -> None:
    async def body() -> None:
        ctx = zmq.asyncio.Context.instance()
        fake = ctx.socket(zmq.ROUTER)
        fake.setsockopt(zmq.LINGER, 0)
        fake.bind(LOOPBACK)
        endpoint = fake.getsockopt_string(zmq.LAST_ENDPOINT)
        received = 0

        async def answer() -> None:
            nonlocal received
            while True:
                ident, _ = await fake.recv_multipart()
                received += 1
                await fake.send_multipart([ident, b'{"protocol": "sdlab/1", "id": 7}'])

        task = asyncio.create_task(answer())
        client = InstrumentClient(endpoint, name="garbler", timeout_s=5.0)
        try:
            with pytest.raises(InstrumentReplyError) as info:
                await client.status("r1", wait_s=1.0)
            # not a timeout: the call was asked again at once, then given up as a bad message
            assert (info.value.code, info.value.retryable) == ("bad_message", True)
            assert "unreadable reply" in str(info.value)
            assert received == 3
            assert client.bad_replies == 3
            assert client.reconnects == 0
        finally:
            task.cancel()
            await client.close()
            fake.close(linger=0)

    run(body)
