"""Receivers ignore keys they do not know, in envelopes and bodies (docs/protocol.md §2, §9).

Both directions, every message type, over real ZeroMQ sockets: a raw ROUTER peer answers the
reference client with replies that a later protocol version might send (extra keys in the
envelope, the body and every nested object), and a raw DEALER sends such requests to the
reference server.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import zmq
import zmq.asyncio

from instruments.client import InstrumentClient, InstrumentReplyError
from instruments.protocol import PROTOCOL_VERSION, RequestStatus, decode_message
from models.records import Measurement
from tests.instruments.test_server_client import LOOPBACK, AdderDriver, run, serving

FUTURE = {"x_future": {"nested": [1, "two", None]}, "priority": 3}
"""Keys no receiver of sdlab/1 knows; added beside the known ones."""


def _with_future(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, **FUTURE}


def _request_state(request_id: str, state: str) -> dict[str, Any]:
    measurements = []
    error = None
    if state == "completed":
        measurements = [
            _with_future({"name": "sum", "value": 3.0, "uncertainty": 0.1, "unit": "V"})
        ]
    if state == "failed":
        error = _with_future(
            {"code": "jammed", "message": "stuck", "field": None, "retryable": True}
        )
    return _with_future(
        {
            "request_id": request_id,
            "action": "add",
            "parameters": {"a": 1, "b": 2},
            "state": state,
            "submitted_at": "2025-05-01T08:00:00.000100Z",
            "started_at": "2025-05-01T08:00:00.000300Z",
            "finished_at": None if state == "running" else "2025-05-01T08:00:01Z",
            "measurements": measurements,
            "error": error,
            "progress": 0.5,
        }
    )


DESCRIPTION = _with_future(
    {
        "name": "adder",
        "driver": "remote-adder",
        "driver_version": "7",
        "protocol": PROTOCOL_VERSION,
        "vendor": "elsewhere",
        "actions": [
            _with_future(
                {
                    "name": "add",
                    "parameters": [
                        _with_future({"name": "a", "minimum": -10, "maximum": 10, "unit": "V"}),
                        _with_future({"name": "b", "step": 0.5}),
                    ],
                    "outputs": [_with_future({"name": "sum", "unit": "V", "shape": []})],
                    "timeout_s": 5,
                    "retry_safe": True,
                    "cost": 2.0,
                    "cost_per": {"a": 0.5},
                    "interlocks": ["door"],
                }
            )
        ],
    }
)


def _reply_body(mtype: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The reply a newer server might send to one request."""
    if mtype == "describe":
        return "describe.reply", DESCRIPTION
    if mtype == "heartbeat":
        return "heartbeat.reply", _with_future(
            {
                "name": "adder",
                "state": "busy",
                "busy_with": ["r-status"],
                "queue_length": 0,
                "time": "2025-05-01T08:30:00.000000Z",
                "uptime_s": 12.5,
                "temperature_c": 21.0,
            }
        )
    rid = body["request_id"]
    if rid == "r-refused":
        return "error", _with_future(
            {
                "code": "parameter_out_of_limits",
                "message": "a too large",
                "field": "parameters.a",
                "retryable": False,
                "hint": "try 10",
            }
        )
    state = {"r-submit": "running", "r-status": "completed", "r-cancel": "failed"}[rid]
    return f"{mtype}.reply", _with_future({"request": _request_state(rid, state)})


def test_the_client_ignores_unknown_keys_in_every_reply() -> None:
    async def body() -> None:
        ctx = zmq.asyncio.Context.instance()
        peer = ctx.socket(zmq.ROUTER)
        peer.setsockopt(zmq.LINGER, 0)
        peer.bind(LOOPBACK)
        endpoint = peer.getsockopt_string(zmq.LAST_ENDPOINT)
        answered: list[str] = []

        async def answer() -> None:
            while True:
                ident, frame = await peer.recv_multipart()
                msg = decode_message(frame)
                rtype, rbody = _reply_body(msg.type, msg.body)
                envelope = {
                    "protocol": PROTOCOL_VERSION,
                    "type": rtype,
                    "id": msg.id,
                    "body": rbody,
                    "trace": {"span": "ab12"},
                    "sent_at": "2025-05-01T08:30:00Z",
                }
                answered.append(rtype)
                await peer.send_multipart([ident, json.dumps(envelope).encode()])

        task = asyncio.create_task(answer())
        client = InstrumentClient(endpoint, name="adder", timeout_s=5.0)
        try:
            desc = await client.describe()
            assert (desc.name, desc.driver, desc.driver_version) == ("adder", "remote-adder", "7")
            action = desc.action("add")
            assert [p.name for p in action.parameters] == ["a", "b"]
            assert action.parameters[0].maximum == 10
            assert action.outputs[0].name == "sum"
            assert (action.timeout_s, action.retry_safe, action.cost_of({"a": 2})) == (5, True, 3)

            state = await client.submit("r-submit", "add", {"a": 1, "b": 2})
            assert state.state is RequestStatus.RUNNING

            state = await client.status("r-status")
            assert state.state is RequestStatus.COMPLETED
            assert state.measurements == [Measurement("sum", 3.0, 0.1, "V")]

            state = await client.cancel("r-cancel")
            assert state.state is RequestStatus.FAILED
            assert state.error is not None
            assert (state.error.code, state.error.retryable) == ("jammed", True)

            with pytest.raises(InstrumentReplyError) as info:
                await client.submit("r-refused", "add", {"a": 11, "b": 0})
            refused = (info.value.code, info.value.field)
            assert refused == ("parameter_out_of_limits", "parameters.a")

            raw = await client.heartbeat()
            assert raw["uptime_s"] == 12.5
            report = await client.heartbeat_report()
            assert report.beat.uptime_s == 12.5
            assert report.beat.busy_with == ("r-status",)
            assert report.beat.time is not None
            assert report.beat.time.year == 2025

            assert answered == [
                "describe.reply",
                "submit.reply",
                "status.reply",
                "cancel.reply",
                "error",
                "heartbeat.reply",
                "heartbeat.reply",
            ]
            assert (client.bad_replies, client.reconnects) == (0, 0)  # nothing sent twice
        finally:
            task.cancel()
            await client.close()
            peer.close(linger=0)

    run(body)


def test_the_server_ignores_unknown_keys_in_every_request() -> None:
    async def body() -> None:
        async with serving(AdderDriver("adder")) as (server, _):
            ctx = zmq.asyncio.Context.instance()
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(server.endpoint)

            async def ask(mtype: str, mbody: dict[str, Any]) -> dict[str, Any]:
                envelope = _with_future(
                    {"protocol": PROTOCOL_VERSION, "type": mtype, "id": f"q-{mtype}"}
                )
                envelope["body"] = _with_future(mbody)
                await dealer.send(json.dumps(envelope).encode())
                reply: dict[str, Any] = json.loads(await asyncio.wait_for(dealer.recv(), 10))
                assert reply["id"] == f"q-{mtype}"
                assert reply["type"] == f"{mtype}.reply", reply
                return reply["body"]  # type: ignore[no-any-return]

            try:
                assert (await ask("describe", {}))["name"] == "adder"
                assert (await ask("heartbeat", {}))["state"] == "idle"
                submit = {"request_id": "k1", "action": "add", "parameters": {"a": 1, "b": 2}}
                got = await ask("submit", {**submit, "wait_s": 5})
                assert got["request"]["state"] == "completed"
                got = await ask("status", {"request_id": "k1", "wait_s": 0})
                assert got["request"]["measurements"][0]["value"] == 3
                got = await ask("cancel", {"request_id": "k1"})
                assert got["request"]["state"] == "completed"  # terminal: unchanged
            finally:
                dealer.close(linger=0)

    run(body)
