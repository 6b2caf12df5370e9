"""The asynchronous ``sdlab/1`` client the controller uses to reach an instrument server.

One DEALER socket carries every call; a reader task routes each reply to the waiting call by
message id, so calls may run concurrently. A call that gets no reply in time raises
:class:`~models.errors.InstrumentTimeoutError` and the socket is replaced ("lazy pirate",
ZeroMQ guide ch. 4): a wedged connection never poisons later calls, calls still in flight are
re-sent on the new socket (every ``sdlab/1`` request is idempotent), and replies that arrive
for calls nobody waits for any more are dropped.

Replies are read as the protocol asks of a receiver: unknown keys are ignored in envelopes and
bodies. A reply that cannot be matched to a call (unreadable, or carrying an id this client
never used) is counted in :attr:`InstrumentClient.bad_replies` and every waiting call is sent
again at once, instead of waiting out its timeout. A server that answers a long poll early
(it may ignore ``wait_s``) is polled with backoff: the next ``status`` of that request waits
50 ms, then twice as long after each further early answer, up to the ``wait_s`` asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import zmq
import zmq.asyncio
from pydantic import ValidationError

from instruments.driver import FROM_WIRE, InstrumentDescription
from instruments.protocol import (
    BAD_MESSAGE,
    DEFAULT_MAX_MESSAGE_BYTES,
    ErrorBody,
    Heartbeat,
    Message,
    MessageError,
    RequestState,
    SafeStateReply,
    decode_message,
    encode_message,
    parse_safe_state_reply,
)
from instruments.security import CurveClientKeys, check_link_policy
from models.errors import InstrumentError, InstrumentTimeoutError, ProtocolError

logger = logging.getLogger(__name__)

FIRST_POLL_S = 0.05
"""Pause before asking again after a server answered a long poll early, in seconds; doubled
after each further early answer, up to the ``wait_s`` asked."""

MAX_RESENDS = 2
"""How often one call is sent again because of replies that could not be matched to it;
after that it fails with ``bad_message`` (retryable)."""

_TRACKED_POLLS = 1024
"""Most requests whose polling backoff is remembered at once (the oldest are forgotten)."""


class InstrumentReplyError(InstrumentError):
    """The instrument answered with an ``error`` reply, or with something malformed.

    ``field`` (inherited) names the offending field when the instrument did
    (``"parameters.temperature_c"``).
    """


@dataclass
class _Pending:
    future: asyncio.Future[Message]
    frame: bytes
    mtype: str
    resends: int = 0


@dataclass(frozen=True)
class HeartbeatReport:
    """A heartbeat and when it was answered, by this side's clock.

    Attributes:
        beat: The validated reply.
        clock_skew_s: The server's ``time`` minus this side's clock at the middle of the round
            trip, in seconds (positive: the server is ahead); ``None`` if it sent no time.
        round_trip_s: Seconds from sending the heartbeat to reading its reply.
    """

    beat: Heartbeat
    clock_skew_s: float | None
    round_trip_s: float


def validation_problem(exc: ValidationError) -> tuple[str | None, str]:
    """The first problem of a pydantic error as ``(field, text)``, the field written as the
    protocol writes body key paths (``actions[0].timeout_s``)."""
    errors = exc.errors()
    if not errors:
        return None, str(exc)
    first = errors[0]
    path = ""
    for part in first.get("loc", ()):
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    text = f"{path}: {first.get('msg', 'invalid')}" if path else first.get("msg", "invalid")
    return path or None, text + more


class InstrumentClient:
    """Talk to one instrument server.

    Args:
        address: The server's endpoint, e.g. ``"tcp://127.0.0.1:5601"``.
        name: Instrument name used in errors and logs (default: the address).
        timeout_s: Seconds to wait for a reply, on top of any long-poll ``wait_s``.
        context: ZeroMQ context (default: the process-wide ``zmq.asyncio`` context).
        max_message_bytes: Largest reply frame accepted, in bytes.
        curve: CURVE keys: encrypt the link and prove this client's identity to the server
            (which must hold ``curve.server_key``'s secret half). A server that does not
            accept the keys never answers: calls time out.
        insecure: Allow a plaintext link to a non-loopback address.
        poll_backoff_s: First pause before the next ``status`` of a request whose long poll
            came back early (the server ignored ``wait_s``), in seconds; ``None`` turns the
            backoff off (every ``status`` is sent at once).

    Raises:
        LinkSecurityError: If ``address`` is not loopback and neither ``curve`` nor
            ``insecure`` is given.
    """

    def __init__(
        self,
        address: str,
        *,
        name: str | None = None,
        timeout_s: float = 5.0,
        context: zmq.asyncio.Context | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        curve: CurveClientKeys | None = None,
        insecure: bool = False,
        poll_backoff_s: float | None = FIRST_POLL_S,
    ) -> None:
        self.address = address
        self.name = name if name is not None else address
        check_link_policy(
            address,
            keys_given=curve is not None,
            insecure=insecure,
            instrument=self.name,
            key="curve.server_public_key",
        )
        self.curve = curve
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes
        self._context = context if context is not None else zmq.asyncio.Context.instance()
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count(1)
        self._socket: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, _Pending] = {}
        self._closed = False
        self.poll_backoff_s = poll_backoff_s
        self._backoff: dict[str, float] = {}  # request id -> pause before its next status
        self.reconnects = 0
        """How many times the socket was replaced (after a timeout, or on :meth:`reconnect`)."""
        self.bad_replies = 0
        """How many replies could not be matched to a call (unreadable, or an id not ours)."""

    async def __aenter__(self) -> InstrumentClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ public calls

    async def describe(self) -> InstrumentDescription:
        """The instrument's name, driver and actions with their limits.

        Keys the description does not define are ignored, at every level.

        Raises:
            InstrumentTimeoutError: No reply within ``timeout_s``.
            InstrumentError: An error reply, or ``bad_message`` naming the offending key
                (``actions[0].timeout_s``) of a description that breaks the schema.
        """
        body = await self._call("describe", {})
        try:
            return InstrumentDescription.model_validate(body, context=FROM_WIRE)
        except ValidationError as exc:
            field, problem = validation_problem(exc)
            # not chained: a pydantic error does not survive pickling (Ray) and says no more
            raise InstrumentReplyError(
                self.name, BAD_MESSAGE, f"refused the describe reply: {problem}", field=field
            ) from None

    async def submit(
        self,
        request_id: str,
        action: str,
        parameters: dict[str, Any],
        *,
        wait_s: float = 0.0,
    ) -> RequestState:
        """Submit an action (idempotently: resubmitting the same id never runs it twice).

        Args:
            request_id: The caller's unique id of this request.
            action: Action name.
            parameters: Action parameters (JSON values).
            wait_s: Long-poll: let the server hold the reply until the request is terminal or
                ``wait_s`` seconds passed.

        Returns:
            The request's state.

        Raises:
            InstrumentTimeoutError: No reply within ``timeout_s + wait_s``.
            InstrumentError: An error reply (``code`` ``unknown_action``,
                ``parameter_out_of_limits`` with ``field``, ``request_id_conflict``, ...).
        """
        body = {
            "request_id": request_id,
            "action": action,
            "parameters": parameters,
            "wait_s": wait_s,
        }
        started = time.monotonic()
        reply = await self._call("submit", body, wait_s=wait_s, request_id=request_id)
        state = self._request_state(reply, request_id)
        self._pace(state, wait_s, time.monotonic() - started)
        return state

    async def status(self, request_id: str, *, wait_s: float = 0.0) -> RequestState:
        """A request's state, optionally long-polling up to ``wait_s`` for it to finish.

        A server may ignore ``wait_s`` and answer at once. Then the next long-polling
        ``status`` of the same request first pauses (50 ms, doubled after each further early
        answer, at most ``wait_s``), so a caller that simply asks again does not flood the
        server; an answer that used its window, or a terminal state, ends the backoff.

        Raises:
            InstrumentTimeoutError: No reply within ``timeout_s + wait_s``.
            InstrumentError: An error reply (``unknown_request`` if the server does not know
                the id).
        """
        pause_s = self._backoff.get(request_id) if wait_s > 0 else None
        if pause_s is not None:
            await asyncio.sleep(min(pause_s, wait_s))
        body = {"request_id": request_id, "wait_s": wait_s}
        started = time.monotonic()
        try:
            reply = await self._call("status", body, wait_s=wait_s, request_id=request_id)
        except InstrumentError:
            self._backoff.pop(request_id, None)
            raise
        state = self._request_state(reply, request_id)
        self._pace(state, wait_s, time.monotonic() - started)
        return state

    async def wait(self, request_id: str, *, timeout_s: float, poll_s: float = 1.0) -> RequestState:
        """Long-poll a request until it is terminal.

        Args:
            request_id: The request.
            timeout_s: Give up after this many seconds.
            poll_s: Long-poll window of each ``status`` call, in seconds.

        Returns:
            The terminal state.

        Raises:
            InstrumentTimeoutError: Not terminal within ``timeout_s``, or a call timed out.
            InstrumentError: An error reply.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            window = max(1e-3, min(max(poll_s, 1e-3), deadline - time.monotonic()))
            state = await self.status(request_id, wait_s=window)  # backs off if answered early
            if state.terminal:
                return state
            if time.monotonic() >= deadline:
                raise InstrumentTimeoutError(
                    self.name,
                    f"request still {state.state.value} after {timeout_s:.3g} s",
                    request_id=request_id,
                )

    async def cancel(self, request_id: str) -> RequestState:
        """Cancel a queued or running request (a terminal one is returned unchanged).

        Raises:
            InstrumentTimeoutError: No reply within ``timeout_s``.
            InstrumentError: An error reply (``unknown_request``).
        """
        self._backoff.pop(request_id, None)
        reply = await self._call("cancel", {"request_id": request_id}, request_id=request_id)
        return self._request_state(reply, request_id)

    async def heartbeat(self) -> dict[str, Any]:
        """The server's liveness report: ``name``, ``state`` (idle/busy), ``busy_with``,
        ``queue_length``, ``time``, ``uptime_s``.

        Raises:
            InstrumentTimeoutError: No reply within ``timeout_s``.
            InstrumentError: An error reply.
        """
        return await self._call("heartbeat", {})

    async def heartbeat_report(self) -> HeartbeatReport:
        """A validated heartbeat, with the server's clock compared to this side's.

        Raises:
            InstrumentTimeoutError: No reply within ``timeout_s``.
            InstrumentError: An error reply, or ``bad_message`` naming the key of a heartbeat
                whose ``time``, ``uptime_s``, ... has the wrong type.
        """
        sent = time.monotonic()
        sent_wall = time.time()
        body = await self._call("heartbeat", {})
        round_trip_s = time.monotonic() - sent
        try:
            beat = Heartbeat.from_json(body)
        except ProtocolError as exc:
            raise self._protocol_error(exc, "refused the heartbeat reply") from None
        skew_s = None
        if beat.time is not None:
            skew_s = beat.time.timestamp() - (sent_wall + round_trip_s / 2)
        return HeartbeatReport(beat, skew_s, round_trip_s)

    def backoff_s(self, request_id: str) -> float | None:
        """The pause before the next long-polling ``status`` of ``request_id``, in seconds
        (``None``: it is sent at once; its last long poll was not answered early)."""
        return self._backoff.get(request_id)

    def reconnect(self, reason: str) -> int:
        """Replace the socket now and send every waiting call again, as a timeout would.

        For a server known to have restarted: what was in flight on the old connection is
        lost, and nothing would answer it before the calls time out.

        Args:
            reason: Why, for the log.

        Returns:
            How many waiting calls were sent again.
        """
        if self._closed:
            return 0
        self._replace_socket(reason)
        return len(self._pending)

    async def safe_state(self, *, wait_s: float = 60.0) -> SafeStateReply:
        """Emergency stop: cancel everything queued or running, put the instrument in its
        safe state, and return what the driver says it did.

        Args:
            wait_s: Seconds allowed for the driver's safe state (a furnace ramping down), on
                top of ``timeout_s``.

        Raises:
            InstrumentTimeoutError: No reply within ``timeout_s + wait_s``.
            InstrumentError: An error reply: ``unknown_type`` from a server that predates
                the message, ``safe_state_failed`` (or the driver's code) if the driver
                could not make the instrument safe.
        """
        body = await self._call("safe_state", {}, wait_s=wait_s)
        try:
            return parse_safe_state_reply(body)
        except ProtocolError as exc:
            raise self._protocol_error(exc, "malformed safe_state reply") from exc

    async def close(self) -> None:
        """Close the socket; calls still waiting fail with code ``closed``."""
        self._closed = True
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(InstrumentError(self.name, "closed", "client closed"))
        self._drop_socket()

    # ------------------------------------------------------------------ machinery

    def _open_socket(self) -> zmq.asyncio.Socket:
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, 4 * self.max_message_bytes + 4096)
        if self.curve is not None:
            self.curve.apply(sock)
        sock.connect(self.address)
        self._socket = sock
        self._reader = asyncio.create_task(self._read(sock), name=f"sdlab-client-{self.name}")
        return sock

    def _drop_socket(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def _replace_socket(self, reason: str = "no reply in time") -> None:
        """Lazy pirate: close the socket and open a new one; re-send calls still waiting."""
        self._drop_socket()
        self.reconnects += 1
        if self._closed:
            return
        sock = self._open_socket()
        for p in self._pending.values():
            with contextlib.suppress(zmq.ZMQError):  # its own timeout will report it
                sock.send(p.frame, zmq.NOBLOCK)
        logger.warning(
            "instrument %s: %s: reconnected to %s, %d call(s) sent again",
            self.name,
            reason,
            self.address,
            len(self._pending),
        )

    def _pace(self, state: RequestState, wait_s: float, took_s: float) -> None:
        """Note whether a long poll came back early, to back off the next one."""
        rid = state.request_id
        if self.poll_backoff_s is None or wait_s <= 0 or state.terminal or took_s >= wait_s / 2:
            self._backoff.pop(rid, None)
            return
        last = self._backoff.pop(rid, None)
        self._backoff[rid] = min(wait_s, self.poll_backoff_s if last is None else 2 * last)
        while len(self._backoff) > _TRACKED_POLLS:
            del self._backoff[next(iter(self._backoff))]

    def _unmatched(self, sock: zmq.asyncio.Socket, what: str) -> None:
        """A reply no call can claim: count it and ask every waiting call again at once.

        Its own reply may be the one that was garbled. Every request is idempotent, so a
        second copy is harmless; the reply that comes second is dropped as stale. A call
        sent again :data:`MAX_RESENDS` times fails with ``bad_message`` (retryable).
        """
        self.bad_replies += 1
        logger.warning(
            "instrument %s: %s (bad reply %d); asking the %d waiting call(s) again",
            self.name,
            what,
            self.bad_replies,
            len(self._pending),
        )
        for mid, p in list(self._pending.items()):
            if p.future.done():
                continue
            if p.resends >= MAX_RESENDS:
                del self._pending[mid]
                p.future.set_exception(
                    InstrumentReplyError(
                        self.name,
                        BAD_MESSAGE,
                        f"{p.mtype}: {MAX_RESENDS + 1} tries, replies unusable; last: {what}",
                        retryable=True,
                    )
                )
                continue
            p.resends += 1
            with contextlib.suppress(zmq.ZMQError):  # its own timeout will report it
                sock.send(p.frame, zmq.NOBLOCK)

    async def _read(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart()
            try:
                msg = decode_message(frames[-1], max_bytes=self.max_message_bytes)
            except MessageError as exc:
                pending = self._pending.pop(exc.message_id or "", None)
                if pending is None:
                    self._unmatched(sock, f"unreadable reply: {exc}")
                elif not pending.future.done():
                    pending.future.set_exception(self._protocol_error(exc, "malformed reply"))
                continue
            pending = self._pending.pop(msg.id, None)
            if pending is not None:
                if not pending.future.done():
                    pending.future.set_result(msg)
            elif msg.id.startswith(self._prefix + "-"):
                logger.debug("instrument %s: stale reply %s dropped", self.name, msg.id)
            else:
                self._unmatched(sock, f"reply to id {msg.id[:64]!r}, which this client never sent")

    async def _call(
        self,
        mtype: str,
        body: dict[str, Any],
        *,
        wait_s: float = 0.0,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        if self._closed:
            raise InstrumentError(self.name, "closed", "client closed", request_id=request_id)
        sock = self._socket if self._socket is not None else self._open_socket()
        message_id = f"{self._prefix}-{next(self._counter)}"
        frame = encode_message(mtype, message_id, body)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = _Pending(future, frame, mtype)
        limit_s = self.timeout_s + wait_s
        try:
            await sock.send(frame, zmq.NOBLOCK)  # a DEALER queues it; Again only if full
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation
            # that arrives as the reply does, and a cancelled heartbeat loop would run on
            async with asyncio.timeout(limit_s):
                reply = await future
        except TimeoutError:
            self._pending.pop(message_id, None)
            self._replace_socket()
            raise InstrumentTimeoutError(
                self.name, f"no reply to {mtype} within {limit_s:.3g} s", request_id=request_id
            ) from None
        except zmq.ZMQError as exc:
            self._replace_socket()
            raise InstrumentError(
                self.name, "transport", f"{mtype}: {exc}", request_id=request_id, retryable=True
            ) from exc
        finally:
            self._pending.pop(message_id, None)
        if reply.type == "error":
            try:
                err = ErrorBody.from_json(reply.body)
            except ProtocolError as exc:
                raise self._protocol_error(exc, "malformed error reply") from exc
            raise InstrumentReplyError(
                self.name,
                err.code,
                err.message,
                field=err.field,
                request_id=request_id,
                retryable=err.retryable,
            )
        if reply.type != f"{mtype}.reply":
            raise InstrumentReplyError(
                self.name,
                BAD_MESSAGE,
                f"expected a {mtype}.reply, got {reply.type!r}",
                field="type",
                request_id=request_id,
            )
        return reply.body

    def _request_state(self, body: dict[str, Any], request_id: str) -> RequestState:
        try:
            state = RequestState.from_json(body.get("request"))
        except ProtocolError as exc:
            raise self._protocol_error(exc, "malformed request state", request_id) from exc
        if state.request_id != request_id:
            raise InstrumentReplyError(
                self.name,
                BAD_MESSAGE,
                f"reply is about request {state.request_id!r}",
                field="request.request_id",
                request_id=request_id,
            )
        return state

    def _protocol_error(
        self, exc: ProtocolError, what: str, request_id: str | None = None
    ) -> InstrumentReplyError:
        return InstrumentReplyError(
            self.name, exc.code, f"{what}: {exc}", field=exc.field, request_id=request_id
        )
