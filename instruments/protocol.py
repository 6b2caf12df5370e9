"""The ``sdlab/1`` wire protocol: message envelopes, error bodies and request states.

Every message is one ZeroMQ frame holding a UTF-8 JSON object::

    {"protocol": "sdlab/1", "type": "submit", "id": "c1-17", "body": {...}}

Replies carry the request's ``id`` and the type ``"<type>.reply"`` or ``"error"``. This
module turns bytes into validated :class:`Message` s and back, and validates the bodies of
the five request types. Malformed input of any kind raises :class:`MessageError` (a
:class:`~models.errors.ProtocolError` carrying the error code, the offending field and, when
it could be read, the message id) and never any other exception.
``docs/protocol.md`` is the normative description, written for driver authors in any
language.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from instruments.driver import PROTOCOL_VERSION
from models.errors import ProtocolError
from models.records import Measurement

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "ERROR_CODES",
    "MAX_ID_LENGTH",
    "MAX_WAIT_S",
    "PROTOCOL_VERSION",
    "REQUEST_TYPES",
    "ErrorBody",
    "Heartbeat",
    "Message",
    "MessageError",
    "RequestState",
    "RequestStatus",
    "SafeStateReply",
    "check_size",
    "decode_message",
    "encode_message",
    "error_message",
    "format_timestamp",
    "parse_request_id",
    "parse_safe_state_reply",
    "parse_submit",
    "parse_timestamp",
    "parse_wait_s",
    "utc_now",
]

DEFAULT_MAX_MESSAGE_BYTES: Final = 1 << 20
"""Largest message (the encoded frame, in bytes) either side accepts by default."""

MAX_ID_LENGTH: Final = 128
"""Longest message id or request id, in characters."""

MAX_WAIT_S: Final = 60.0
"""Longest long-poll a server honours, in seconds; larger ``wait_s`` values are capped."""

REQUEST_TYPES: Final = frozenset(
    {"describe", "submit", "status", "cancel", "heartbeat", "safe_state"}
)
"""The request types of ``sdlab/1`` (``safe_state``, the emergency stop, was added later: a
server that does not know it answers ``unknown_type``)."""

# Error codes (docs/protocol.md, "Error codes").
BAD_MESSAGE: Final = "bad_message"
UNSUPPORTED_PROTOCOL: Final = "unsupported_protocol"
UNKNOWN_TYPE: Final = "unknown_type"
MESSAGE_TOO_LARGE: Final = "message_too_large"
UNKNOWN_ACTION: Final = "unknown_action"
PARAMETER_OUT_OF_LIMITS: Final = "parameter_out_of_limits"
UNKNOWN_REQUEST: Final = "unknown_request"
REQUEST_ID_CONFLICT: Final = "request_id_conflict"
ACTION_FAILED: Final = "action_failed"
INTERRUPTED: Final = "interrupted"
INTERNAL: Final = "internal"
SAFE_STATE_FAILED: Final = "safe_state_failed"

ERROR_CODES: Final = frozenset(
    {
        BAD_MESSAGE,
        UNSUPPORTED_PROTOCOL,
        UNKNOWN_TYPE,
        MESSAGE_TOO_LARGE,
        UNKNOWN_ACTION,
        PARAMETER_OUT_OF_LIMITS,
        UNKNOWN_REQUEST,
        REQUEST_ID_CONFLICT,
        ACTION_FAILED,
        INTERRUPTED,
        INTERNAL,
        SAFE_STATE_FAILED,
    }
)
"""Every error code ``sdlab/1`` defines (drivers may add their own inside RequestState.error)."""


class MessageError(ProtocolError):
    """A malformed message, with the id of the message it came in when that could be read.

    Attributes:
        message_id: The offending message's ``id``, or ``None`` if it could not be read.
    """

    def __init__(
        self, code: str, message: str, field: str | None = None, message_id: str | None = None
    ) -> None:
        super().__init__(code, message, field)
        self.message_id = message_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.detail, self.field, self.message_id))


# --------------------------------------------------------------------------- timestamps


def utc_now() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def format_timestamp(value: datetime) -> str:
    """ISO-8601 text of ``value`` in UTC with a ``Z`` suffix (``2025-01-31T12:00:00.123456Z``).

    Raises:
        ValueError: If ``value`` is naive (has no timezone).
    """
    if value.tzinfo is None:
        raise ValueError("naive datetime: a timestamp must carry a timezone")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: object, field: str = "time") -> datetime:
    """Parse an ISO-8601 timestamp with a timezone into a UTC datetime.

    Raises:
        ProtocolError: ``bad_message`` naming ``field`` if ``text`` is not such a timestamp.
    """
    if not isinstance(text, str):
        raise MessageError(BAD_MESSAGE, "expected an ISO-8601 timestamp string", field)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise MessageError(
            BAD_MESSAGE, f"not an ISO-8601 timestamp: {text[:64]!r}", field
        ) from None
    if value.tzinfo is None:
        raise MessageError(BAD_MESSAGE, "timestamp lacks a timezone (use 'Z')", field)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 has no UTC datetime
        raise MessageError(BAD_MESSAGE, f"timestamp out of range: {text!r}", field) from None


# --------------------------------------------------------------------------- envelopes


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded ``sdlab/1`` message.

    Attributes:
        type: Message type (``"submit"``, ``"submit.reply"``, ``"error"``, ...).
        id: Message id chosen by the client; a reply repeats its request's id.
        body: The type-specific body.
    """

    type: str
    id: str
    body: dict[str, Any]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def check_size(size_bytes: int, max_bytes: int) -> None:
    """Raise ``message_too_large`` if a frame of ``size_bytes`` exceeds ``max_bytes``.

    Raises:
        ProtocolError: ``message_too_large``.
    """
    if size_bytes > max_bytes:
        raise MessageError(
            MESSAGE_TOO_LARGE, f"message of {size_bytes} bytes exceeds the {max_bytes}-byte limit"
        )


def _check_id(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise MessageError(BAD_MESSAGE, "expected a non-empty string", field)
    if len(value) > MAX_ID_LENGTH:
        raise MessageError(BAD_MESSAGE, f"longer than {MAX_ID_LENGTH} characters", field)
    return value


def decode_message(data: bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    """Decode and validate one frame's envelope.

    Checks, in order: size, UTF-8, JSON, that it is an object, ``protocol``, ``id``,
    ``type`` and ``body``. The body's contents are not checked here.

    Args:
        data: The frame.
        max_bytes: Size limit, in bytes.

    Returns:
        The message.

    Raises:
        MessageError: (a ``ProtocolError``) ``message_too_large``, ``bad_message`` or
            ``unsupported_protocol``; ``message_id`` is set when the id could be read.
    """
    check_size(len(data), max_bytes)
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except Exception as exc:  # UnicodeDecodeError, JSONDecodeError, RecursionError, ...
        raise MessageError(BAD_MESSAGE, f"not a UTF-8 JSON document: {exc}") from None
    if not isinstance(obj, dict):
        raise MessageError(BAD_MESSAGE, f"expected a JSON object, got {type(obj).__name__}")
    raw_id = obj.get("id")
    message_id = raw_id if isinstance(raw_id, str) and 0 < len(raw_id) <= MAX_ID_LENGTH else None
    protocol = obj.get("protocol")
    if not isinstance(protocol, str):
        raise MessageError(BAD_MESSAGE, "missing or not a string", "protocol", message_id)
    if protocol != PROTOCOL_VERSION:
        raise MessageError(
            UNSUPPORTED_PROTOCOL,
            f"protocol {protocol!r} is not supported (this side speaks {PROTOCOL_VERSION!r})",
            "protocol",
            message_id,
        )
    checked_id = _check_id(raw_id, "id")
    mtype = obj.get("type")
    if not isinstance(mtype, str) or not mtype:
        raise MessageError(BAD_MESSAGE, "missing or not a non-empty string", "type", message_id)
    body = obj.get("body")
    if not isinstance(body, dict):
        raise MessageError(BAD_MESSAGE, "missing or not a JSON object", "body", message_id)
    return Message(mtype, checked_id, body)


def encode_message(mtype: str, message_id: str | None, body: Mapping[str, Any]) -> bytes:
    """Encode one message as a frame (compact UTF-8 JSON).

    Args:
        mtype: Message type.
        message_id: The id (``None`` only for an error reply to a message whose id was
            unreadable).
        body: JSON-serialisable body; non-finite floats are refused.

    Raises:
        ValueError: If the body is not JSON-serialisable (a programming error, not input).
    """
    obj = {"protocol": PROTOCOL_VERSION, "type": mtype, "id": message_id, "body": body}
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()


# --------------------------------------------------------------------------- error bodies


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """The body of an ``error`` reply, and the ``error`` of a failed request.

    Attributes:
        code: Structured error code (see :data:`ERROR_CODES`; drivers may add their own).
        message: Human-readable explanation.
        field: Offending field as a dotted path (``"parameters.temperature_c"``), if any.
        retryable: Whether repeating the same request may succeed.
    """

    code: str
    message: str
    field: str | None = None
    retryable: bool = False

    def to_json(self) -> dict[str, Any]:
        """The JSON object form."""
        return {
            "code": self.code,
            "message": self.message,
            "field": self.field,
            "retryable": self.retryable,
        }

    @classmethod
    def from_json(cls, obj: object, field: str = "body") -> ErrorBody:
        """Validate an error body.

        Raises:
            ProtocolError: ``bad_message`` naming the offending field.
        """
        d = _object(obj, field)
        code = _string(d.get("code"), f"{field}.code")
        message = _string(d.get("message"), f"{field}.message")
        err_field = d.get("field")
        if err_field is not None and not isinstance(err_field, str):
            raise MessageError(BAD_MESSAGE, "expected a string or null", f"{field}.field")
        retryable = d.get("retryable", False)
        if not isinstance(retryable, bool):
            raise MessageError(BAD_MESSAGE, "expected true or false", f"{field}.retryable")
        return cls(code, message, err_field, retryable)


def error_message(
    message_id: str | None,
    code: str,
    message: str,
    field: str | None = None,
    retryable: bool = False,
) -> bytes:
    """Encode an ``error`` reply frame."""
    return encode_message("error", message_id, ErrorBody(code, message, field, retryable).to_json())


# --------------------------------------------------------------------------- request state


class RequestStatus(StrEnum):
    """Where a submitted request is. ``queued -> running -> completed | failed``;
    ``queued | running -> cancelled``."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES: Final = frozenset(
    {RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED}
)
_STATUS_BY_VALUE: Final = {s.value: s for s in RequestStatus}


@dataclass(frozen=True)
class RequestState:
    """What an instrument knows about one submitted request.

    Attributes:
        request_id: The caller's id of the request (the controller uses its step id).
        action: The action name.
        parameters: The parameters it was submitted with.
        state: Where it is in its lifecycle.
        submitted_at: When the server accepted it (UTC).
        started_at: When the driver started it (UTC), if it has.
        finished_at: When it reached a terminal state (UTC), if it has.
        measurements: What it measured (completed requests only).
        error: Why it failed (failed requests only).
    """

    request_id: str
    action: str
    parameters: dict[str, Any]
    state: RequestStatus
    submitted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    measurements: list[Measurement] = field(default_factory=list)
    error: ErrorBody | None = None

    @property
    def terminal(self) -> bool:
        """Whether the request is completed, failed or cancelled (it will not change again)."""
        return self.state in TERMINAL_STATUSES

    def to_json(self) -> dict[str, Any]:
        """The JSON object form (as sent on the wire and written to the journal)."""
        return {
            "request_id": self.request_id,
            "action": self.action,
            "parameters": self.parameters,
            "state": self.state.value,
            "submitted_at": format_timestamp(self.submitted_at),
            "started_at": None if self.started_at is None else format_timestamp(self.started_at),
            "finished_at": None if self.finished_at is None else format_timestamp(self.finished_at),
            "measurements": [_measurement_to_json(m) for m in self.measurements],
            "error": None if self.error is None else self.error.to_json(),
        }

    @classmethod
    def from_json(cls, obj: object, field: str = "request") -> RequestState:
        """Validate a request state received from an instrument (or read from a journal).

        Raises:
            ProtocolError: ``bad_message`` naming the offending field.
        """
        d = _object(obj, field)
        state_text = d.get("state")
        if not isinstance(state_text, str) or state_text not in _STATUS_BY_VALUE:
            raise MessageError(
                BAD_MESSAGE, f"expected one of {sorted(_STATUS_BY_VALUE)}", f"{field}.state"
            )
        raw_measurements = d.get("measurements", [])
        if not isinstance(raw_measurements, list):
            raise MessageError(BAD_MESSAGE, "expected a list", f"{field}.measurements")
        raw_error = d.get("error")
        return cls(
            request_id=_check_id(d.get("request_id"), f"{field}.request_id"),
            action=_string(d.get("action"), f"{field}.action"),
            parameters=_object(d.get("parameters"), f"{field}.parameters"),
            state=_STATUS_BY_VALUE[state_text],
            submitted_at=parse_timestamp(d.get("submitted_at"), f"{field}.submitted_at"),
            started_at=_optional_time(d.get("started_at"), f"{field}.started_at"),
            finished_at=_optional_time(d.get("finished_at"), f"{field}.finished_at"),
            measurements=[
                _measurement_from_json(m, f"{field}.measurements[{i}]")
                for i, m in enumerate(raw_measurements)
            ],
            error=None if raw_error is None else ErrorBody.from_json(raw_error, f"{field}.error"),
        )


def _measurement_to_json(m: Measurement) -> dict[str, Any]:
    return {
        "name": m.name,
        "value": m.value,
        "uncertainty": m.uncertainty,
        "unit": m.unit,
        "array": m.array,
    }


def _measurement_from_json(obj: object, field: str) -> Measurement:
    d = _object(obj, field)
    array = d.get("array")
    if array is not None and not isinstance(array, list):
        raise MessageError(BAD_MESSAGE, "expected a list or null", f"{field}.array")
    unit = d.get("unit", "")
    if not isinstance(unit, str):
        raise MessageError(BAD_MESSAGE, "expected a string", f"{field}.unit")
    return Measurement(
        name=_string(d.get("name"), f"{field}.name"),
        value=_optional_number(d.get("value"), f"{field}.value"),
        uncertainty=_optional_number(d.get("uncertainty"), f"{field}.uncertainty"),
        unit=unit,
        array=array,
    )


# --------------------------------------------------------------------------- heartbeats


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A validated ``heartbeat.reply`` body (docs/protocol.md section 3.5).

    Every key is read when present and checked for its type; one that is absent is ``None``
    (or empty), so a minimal server is still understood. Unknown keys are ignored.

    Attributes:
        name: The instrument's name.
        state: ``"idle"`` or ``"busy"`` (any other text is kept as sent).
        busy_with: The running request ids.
        queue_length: Requests waiting behind the running one.
        time: The server's clock when it answered (UTC).
        uptime_s: Seconds since the server started; smaller than last time: it restarted.
        boot_id: An id the server draws anew each time it starts; a different one from last
            time: it restarted (however long it has been up since).
    """

    name: str | None = None
    state: str | None = None
    busy_with: tuple[str, ...] = ()
    queue_length: int | None = None
    time: datetime | None = None
    uptime_s: float | None = None
    boot_id: str | None = None

    @classmethod
    def from_json(cls, obj: object, field: str = "body") -> Heartbeat:
        """Validate a heartbeat reply body.

        Raises:
            ProtocolError: ``bad_message`` naming the offending key (``uptime_s``, ``time``, ...).
        """
        d = _object(obj, field)
        name, state, boot_id = d.get("name"), d.get("state"), d.get("boot_id")
        for key, value in (("name", name), ("state", state), ("boot_id", boot_id)):
            if value is not None and not isinstance(value, str):
                raise MessageError(BAD_MESSAGE, "expected a string", key)
        busy = d.get("busy_with") or []
        if not isinstance(busy, list) or not all(isinstance(b, str) for b in busy):
            raise MessageError(BAD_MESSAGE, "expected a list of request ids", "busy_with")
        queue = d.get("queue_length")
        if queue is not None and (isinstance(queue, bool) or not isinstance(queue, int)):
            raise MessageError(BAD_MESSAGE, "expected an integer", "queue_length")
        uptime_s = _optional_number(d.get("uptime_s"), "uptime_s")
        if uptime_s is not None and uptime_s < 0:
            raise MessageError(BAD_MESSAGE, "expected a number >= 0 (seconds)", "uptime_s")
        return cls(
            name=name,
            state=state,
            busy_with=tuple(busy),
            queue_length=queue,
            time=_optional_time(d.get("time"), "time"),
            uptime_s=uptime_s,
            boot_id=boot_id,
        )


# --------------------------------------------------------------------------- request bodies


@dataclass(frozen=True, slots=True)
class SubmitBody:
    """A validated ``submit`` body (parameters not yet checked against the action's limits)."""

    request_id: str
    action: str
    parameters: dict[str, Any]
    wait_s: float


def parse_request_id(body: Mapping[str, Any]) -> str:
    """The body's ``request_id``.

    Raises:
        ProtocolError: ``bad_message`` with field ``request_id``.
    """
    return _check_id(body.get("request_id"), "request_id")


def parse_wait_s(body: Mapping[str, Any]) -> float:
    """The body's optional ``wait_s`` (default 0), capped at :data:`MAX_WAIT_S`.

    Raises:
        ProtocolError: ``bad_message`` with field ``wait_s`` if it is not a finite number >= 0.
    """
    value = body.get("wait_s", 0.0)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise MessageError(BAD_MESSAGE, "expected a number >= 0 (seconds)", "wait_s")
    return MAX_WAIT_S if value >= MAX_WAIT_S else float(value)  # huge ints do not overflow


def parse_submit(body: Mapping[str, Any]) -> SubmitBody:
    """Validate a ``submit`` body's shape.

    Raises:
        ProtocolError: ``bad_message`` naming ``request_id``, ``action``, ``parameters`` or
            ``wait_s``.
    """
    return SubmitBody(
        request_id=parse_request_id(body),
        action=_string(body.get("action"), "action"),
        parameters=_object(body.get("parameters"), "parameters"),
        wait_s=parse_wait_s(body),
    )


@dataclass(frozen=True, slots=True)
class SafeStateReply:
    """A validated ``safe_state.reply`` body (the emergency stop, ``docs/protocol.md`` 3.6).

    Attributes:
        name: The instrument's name.
        description: What the driver did to make the instrument safe (one line).
        cancelled: Request ids the server cancelled first (running, then queued ones).
    """

    name: str
    description: str
    cancelled: list[str]

    def to_json(self) -> dict[str, Any]:
        """The JSON object form."""
        return {"name": self.name, "description": self.description, "cancelled": self.cancelled}


def parse_safe_state_reply(body: Mapping[str, Any]) -> SafeStateReply:
    """Validate a ``safe_state.reply`` body.

    Raises:
        ProtocolError: ``bad_message`` naming ``name``, ``description`` or ``cancelled``.
    """
    cancelled = body.get("cancelled", [])
    if not isinstance(cancelled, list):
        raise MessageError(BAD_MESSAGE, "expected a list of request ids", "cancelled")
    return SafeStateReply(
        name=_string(body.get("name"), "name"),
        description=_string(body.get("description"), "description"),
        cancelled=[_check_id(r, f"cancelled[{i}]") for i, r in enumerate(cancelled)],
    )


# --------------------------------------------------------------------------- helpers


def _object(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MessageError(BAD_MESSAGE, "missing or not a JSON object", field)
    return value


def _string(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise MessageError(BAD_MESSAGE, "missing or not a non-empty string", field)
    return value


def _optional_number(value: object, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MessageError(BAD_MESSAGE, "expected a number or null", field)
    try:
        number = float(value)  # an int beyond the float range overflows
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise MessageError(BAD_MESSAGE, "expected a finite number", field)
    return number


def _optional_time(value: object, field: str) -> datetime | None:
    return None if value is None else parse_timestamp(value, field)
