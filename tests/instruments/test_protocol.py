"""Envelope, error-body and request-state validation of the sdlab/1 wire protocol."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from instruments.protocol import (
    MAX_WAIT_S,
    PROTOCOL_VERSION,
    ErrorBody,
    MessageError,
    RequestState,
    RequestStatus,
    check_size,
    decode_message,
    encode_message,
    error_message,
    format_timestamp,
    parse_submit,
    parse_timestamp,
    parse_wait_s,
)
from models.errors import ProtocolError
from models.records import Measurement


def _frame(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _envelope(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"protocol": PROTOCOL_VERSION, "type": "describe", "id": "m1", "body": {}}
    obj.update(changes)
    return obj


def test_round_trip() -> None:
    frame = encode_message("submit", "m-7", {"request_id": "r1", "x": [1, 2.5, "é"]})
    msg = decode_message(frame)
    assert (msg.type, msg.id) == ("submit", "m-7")
    assert msg.body == {"request_id": "r1", "x": [1, 2.5, "é"]}


@pytest.mark.parametrize(
    ("data", "code", "field", "message_id"),
    [
        (b"\xff\xfe not utf-8", "bad_message", None, None),
        (b"{not json", "bad_message", None, None),
        (b"[1, 2, 3]", "bad_message", None, None),
        (b'"a string"', "bad_message", None, None),
        (
            b'{"protocol": "sdlab/1", "type": "describe", "id": "m", "body": {"x": NaN}}',
            "bad_message",
            None,
            None,
        ),
        (_frame(_envelope(protocol=None)), "bad_message", "protocol", "m1"),
        (_frame({"type": "describe", "id": "m1", "body": {}}), "bad_message", "protocol", "m1"),
        (_frame(_envelope(protocol="sdlab/2")), "unsupported_protocol", "protocol", "m1"),
        (_frame(_envelope(id=7)), "bad_message", "id", None),
        (_frame(_envelope(id="")), "bad_message", "id", None),
        (_frame(_envelope(id="x" * 129)), "bad_message", "id", None),
        (_frame(_envelope(type=3)), "bad_message", "type", "m1"),
        (
            _frame({"protocol": "sdlab/1", "type": "describe", "id": "m1"}),
            "bad_message",
            "body",
            "m1",
        ),
        (_frame(_envelope(body=[])), "bad_message", "body", "m1"),
        (b"[" * 100_000, "bad_message", None, None),
    ],
)
def test_malformed_envelopes(
    data: bytes, code: str, field: str | None, message_id: str | None
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_message(data)
    assert info.value.code == code
    assert info.value.field == field
    assert isinstance(info.value, MessageError)
    assert info.value.message_id == message_id


def test_size_limit() -> None:
    frame = encode_message("describe", "m1", {"pad": "x" * 2000})
    with pytest.raises(ProtocolError) as info:
        decode_message(frame, max_bytes=1000)
    assert info.value.code == "message_too_large"
    check_size(1000, 1000)
    with pytest.raises(ProtocolError):
        check_size(1001, 1000)


def test_error_message_body() -> None:
    msg = decode_message(error_message("m3", "unknown_request", "no such", "request_id"))
    assert msg.type == "error"
    assert ErrorBody.from_json(msg.body) == ErrorBody("unknown_request", "no such", "request_id")
    with pytest.raises(ProtocolError) as info:
        ErrorBody.from_json({"code": "x", "message": "y", "retryable": "yes"})
    assert info.value.field == "body.retryable"


def test_timestamps_are_utc_iso8601() -> None:
    t = datetime(2025, 1, 31, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    text = format_timestamp(t)
    assert text == "2025-01-31T10:00:00.123456Z"
    assert parse_timestamp(text) == t
    assert parse_timestamp("2025-01-31T10:00:00+00:00").tzinfo is UTC
    with pytest.raises(ValueError, match="naive"):
        format_timestamp(datetime(2025, 1, 1))
    for bad in ("2025-01-31T10:00:00", "yesterday", 5):
        with pytest.raises(ProtocolError) as info:
            parse_timestamp(bad, "request.started_at")
        assert info.value.field == "request.started_at"


def _state() -> RequestState:
    t0 = datetime(2025, 5, 1, 8, 0, tzinfo=UTC)
    return RequestState(
        request_id="step-1",
        action="measure",
        parameters={"x": 0.5, "mode": "fast"},
        state=RequestStatus.COMPLETED,
        submitted_at=t0,
        started_at=t0 + timedelta(seconds=1),
        finished_at=t0 + timedelta(seconds=2),
        measurements=[
            Measurement("y", 1.25, 0.01, "V"),
            Measurement("spectrum", array=[[1.0, 2.0], [3.0, 4.0]]),
        ],
    )


def test_request_state_round_trip() -> None:
    state = _state()
    assert state.terminal
    wire = json.loads(json.dumps(state.to_json()))
    assert wire["state"] == "completed"
    assert wire["finished_at"] == "2025-05-01T08:00:02.000000Z"
    assert RequestState.from_json(wire) == state
    queued = RequestState("r", "a", {}, RequestStatus.QUEUED, state.submitted_at)
    assert not queued.terminal
    assert RequestState.from_json(queued.to_json()) == queued


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"state": "done"}, "request.state"),
        ({"request_id": None}, "request.request_id"),
        ({"parameters": [1]}, "request.parameters"),
        ({"submitted_at": None}, "request.submitted_at"),
        ({"finished_at": "soon"}, "request.finished_at"),
        ({"measurements": {}}, "request.measurements"),
        ({"measurements": [{"name": "y", "value": "1"}]}, "request.measurements[0].value"),
        ({"measurements": [{"value": 1.0}]}, "request.measurements[0].name"),
        ({"error": {"code": "x"}}, "request.error.message"),
    ],
)
def test_request_state_validation(change: dict[str, Any], field: str) -> None:
    wire = _state().to_json()
    wire.update(change)
    with pytest.raises(ProtocolError) as info:
        RequestState.from_json(wire)
    assert info.value.code == "bad_message"
    assert info.value.field == field


def test_submit_body_validation() -> None:
    sub = parse_submit({"request_id": "r1", "action": "add", "parameters": {"a": 1}, "wait_s": 2})
    assert (sub.request_id, sub.action, sub.parameters, sub.wait_s) == ("r1", "add", {"a": 1}, 2.0)
    assert parse_wait_s({}) == 0.0
    assert parse_wait_s({"wait_s": 1e9}) == MAX_WAIT_S
    cases = [
        ({"action": "add", "parameters": {}}, "request_id"),
        ({"request_id": "r", "parameters": {}}, "action"),
        ({"request_id": "r", "action": "add", "parameters": [1]}, "parameters"),
        ({"request_id": "r", "action": "add", "parameters": {}, "wait_s": -1}, "wait_s"),
        ({"request_id": "r", "action": "add", "parameters": {}, "wait_s": True}, "wait_s"),
        ({"request_id": "r", "action": "add", "parameters": {}, "wait_s": "1"}, "wait_s"),
    ]
    for body, field in cases:
        with pytest.raises(ProtocolError) as info:
            parse_submit(body)
        assert (info.value.code, info.value.field) == ("bad_message", field)


def test_a_message_error_survives_pickling_with_its_id() -> None:
    with pytest.raises(MessageError) as info:
        decode_message(b'{"protocol": "sdlab/1", "id": "m-1", "type": "status", "body": 3}')
    back = pickle.loads(pickle.dumps(info.value))
    assert (back.code, back.field, back.message_id, str(back)) == (
        "bad_message",
        "body",
        "m-1",
        str(info.value),
    )
