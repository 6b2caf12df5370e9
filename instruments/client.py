"""The asynchronous ``sdlab/1`` client the controller uses to reach an instrument server.

One DEALER socket carries every call; a reader task routes each reply to the waiting call by
message id, so calls may run concurrently. A call that gets no reply in time raises
:class:`~models.errors.InstrumentTimeoutError` and the socket is replaced ("lazy pirate",
ZeroMQ guide ch. 4): a wedged connection never poisons later calls, calls still in flight are
re-sent on the new socket (every ``sdlab/1`` request is idempotent), and replies that arrive
for calls nobody waits for any more are dropped.
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

from instruments.driver import InstrumentDescription
from instruments.protocol import (
    BAD_MESSAGE,
    DEFAULT_MAX_MESSAGE_BYTES,
    ErrorBody,
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


class InstrumentReplyError(InstrumentError):
    """The instrument answered with an ``error`` reply, or with something malformed.

    ``field`` (inherited) names the offending field when the instrument did
    (``"parameters.temperature_c"``).
    """


@dataclass
class _Pending:
    future: asyncio.Future[Message]
    frame: bytes


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
        self.reconnects = 0
        """How many times the socket was replaced after a timeout."""

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

        Raises:
            InstrumentTimeoutError: No reply within ``timeout_s``.
            InstrumentError: An error or malformed reply.
        """
        body = await self._call("describe", {})
        try:
            return InstrumentDescription.model_validate(body)
        except ValidationError as exc:
            raise InstrumentReplyError(
                self.name, BAD_MESSAGE, f"malformed describe reply: {exc}", field="body"
            ) from exc

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
        reply = await self._call("submit", body, wait_s=wait_s, request_id=request_id)
        return self._request_state(reply, request_id)

    async def status(self, request_id: str, *, wait_s: float = 0.0) -> RequestState:
        """A request's state, optionally long-polling up to ``wait_s`` for it to finish.

        Raises:
            InstrumentTimeoutError: No reply within ``timeout_s + wait_s``.
            InstrumentError: An error reply (``unknown_request`` if the server does not know
                the id).
        """
        body = {"request_id": request_id, "wait_s": wait_s}
        reply = await self._call("status", body, wait_s=wait_s, request_id=request_id)
        return self._request_state(reply, request_id)

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
            window = max(0.0, min(max(poll_s, 1e-3), deadline - time.monotonic()))
            started = time.monotonic()
            state = await self.status(request_id, wait_s=window)
            if state.terminal:
                return state
            now = time.monotonic()
            if now >= deadline:
                raise InstrumentTimeoutError(
                    self.name,
                    f"request still {state.state.value} after {timeout_s:.3g} s",
                    request_id=request_id,
                )
            early = window - (now - started)
            if early > 0:  # a server that ignores wait_s answers at once; do not spin
                await asyncio.sleep(min(early, deadline - now))

    async def cancel(self, request_id: str) -> RequestState:
        """Cancel a queued or running request (a terminal one is returned unchanged).

        Raises:
            InstrumentTimeoutError: No reply within ``timeout_s``.
            InstrumentError: An error reply (``unknown_request``).
        """
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

    def _replace_socket(self) -> None:
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
            "instrument %s: no reply in time, reconnected to %s", self.name, self.address
        )

    async def _read(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart()
            try:
                msg = decode_message(frames[-1], max_bytes=self.max_message_bytes)
            except MessageError as exc:
                pending = self._pending.pop(exc.message_id or "", None)
                if pending is None:
                    logger.warning("instrument %s: unreadable reply dropped: %s", self.name, exc)
                elif not pending.future.done():
                    pending.future.set_exception(self._protocol_error(exc, "malformed reply"))
                continue
            pending = self._pending.pop(msg.id, None)
            if pending is None:
                logger.debug("instrument %s: stale reply %s dropped", self.name, msg.id)
            elif not pending.future.done():
                pending.future.set_result(msg)

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
        self._pending[message_id] = _Pending(future, frame)
        limit_s = self.timeout_s + wait_s
        try:
            await sock.send(frame, zmq.NOBLOCK)  # a DEALER queues it; Again only if full
            reply = await asyncio.wait_for(future, limit_s)
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
