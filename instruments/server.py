"""The instrument server: hosts one :class:`~instruments.driver.Driver` behind ``sdlab/1``.

The server binds a ZeroMQ ROUTER socket and answers every frame it receives with exactly one
reply frame (an ``error`` reply for anything malformed; it never crashes on input). Submitted
actions run one at a time in submission order. Request ids make ``submit`` idempotent, and an
optional JSON-lines journal of terminal request states keeps them so across restarts.
``docs/protocol.md`` describes the protocol this implements.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import zmq
import zmq.asyncio

from instruments.driver import CURRENT_REQUEST, ActionSpec, Driver
from instruments.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    INTERNAL,
    INTERRUPTED,
    MESSAGE_TOO_LARGE,
    PARAMETER_OUT_OF_LIMITS,
    REQUEST_ID_CONFLICT,
    SAFE_STATE_FAILED,
    UNKNOWN_ACTION,
    UNKNOWN_REQUEST,
    UNKNOWN_TYPE,
    ErrorBody,
    Message,
    MessageError,
    RequestState,
    RequestStatus,
    SafeStateReply,
    decode_message,
    encode_message,
    error_message,
    format_timestamp,
    parse_request_id,
    parse_submit,
    parse_wait_s,
    utc_now,
)
from instruments.security import CurveServerKeys, ZapRegistration, check_link_policy
from models.errors import IllegalTransitionError, InstrumentError, ParameterLimitError
from models.records import Measurement

logger = logging.getLogger(__name__)

_TRANSITIONS: dict[RequestStatus, frozenset[RequestStatus]] = {
    RequestStatus.QUEUED: frozenset({RequestStatus.RUNNING, RequestStatus.CANCELLED}),
    RequestStatus.RUNNING: frozenset(
        {RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED}
    ),
}

Frames = list[bytes]

MAX_CANCELLED_UNKNOWN = 10_000
"""How many ids of requests cancelled before they arrived a server remembers (the newest)."""


@dataclass
class _Entry:
    """A request the server knows about; ``done`` resolves when it turns terminal."""

    state: RequestState
    done: asyncio.Future[None]
    task: asyncio.Task[list[Measurement]] | None = None


class InstrumentServer:
    """Serve one driver over a ZeroMQ ROUTER socket.

    Args:
        driver: The driver to host.
        address: Endpoint to bind, e.g. ``"tcp://127.0.0.1:5601"`` or ``"tcp://127.0.0.1:*"``
            (a free port; read :attr:`endpoint` after :meth:`start`).
        journal_path: JSON-lines file of terminal request states; read at start so that
            request ids stay idempotent across restarts, appended to as requests finish.
        max_message_bytes: Largest frame accepted or sent, in bytes.
        context: ZeroMQ context (default: the process-wide ``zmq.asyncio`` context).
        curve: CURVE keys: encrypt the link and answer only the allowed clients.
        insecure: Allow binding a non-loopback address without ``curve`` (plaintext).

    Raises:
        LinkSecurityError: At :meth:`start`, if the address is not loopback and neither
            ``curve`` nor ``insecure`` is given.
    """

    def __init__(
        self,
        driver: Driver,
        address: str,
        *,
        journal_path: Path | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        context: zmq.asyncio.Context | None = None,
        curve: CurveServerKeys | None = None,
        insecure: bool = False,
    ) -> None:
        self.driver = driver
        self.curve = curve
        self.insecure = insecure
        self._zap: ZapRegistration | None = None
        self.address = address
        self.journal_path = journal_path
        self.max_message_bytes = max_message_bytes
        self._context = context
        self._socket: zmq.asyncio.Socket | None = None
        self._endpoint: str | None = None
        self._entries: dict[str, _Entry] = {}
        # ids cancelled before they arrived, oldest first: a late copy of one is not run
        self._cancelled_unknown: dict[str, None] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._n_queued = 0
        self._running: _Entry | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pollers: set[_LongPoll] = set()
        self._journal: IO[str] | None = None
        self._cut_off: list[RequestState] = []
        self._stopped: asyncio.Event | None = None
        self._started_monotonic = 0.0
        self._boot_id = ""  # new at every start: a changed boot id is a restart
        self._describe_body: dict[str, Any] = {}
        self._actions: dict[str, ActionSpec] = {}
        self._connected = False
        self._handlers: dict[str, Callable[[Frames, Message], Coroutine[Any, Any, None]]] = {
            "describe": self._on_describe,
            "submit": self._on_submit,
            "status": self._on_status,
            "cancel": self._on_cancel,
            "heartbeat": self._on_heartbeat,
            "safe_state": self._on_safe_state,
        }

    # ------------------------------------------------------------------ lifecycle

    @property
    def name(self) -> str:
        """The hosted instrument's name."""
        return self.driver.name

    @property
    def endpoint(self) -> str:
        """The bound endpoint (with the actual port when the address used ``*``).

        Raises:
            RuntimeError: If the server has not been started.
        """
        if self._endpoint is None:
            raise RuntimeError(f"instrument server {self.name!r} is not started")
        return self._endpoint

    async def start(self) -> str:
        """Connect the driver (once), load the journal, bind the socket and start serving.

        Returns:
            The bound endpoint.
        """
        if self._endpoint is not None:
            return self._endpoint
        check_link_policy(
            self.address,
            keys_given=self.curve is not None,
            insecure=self.insecure,
            instrument=self.name,
            key="curve.server_secret_key",
        )
        if not self._connected:
            await self.driver.connect()  # before describe: actions may come from the hardware
            self._connected = True
        description = self.driver.describe()
        self._describe_body = description.model_dump(mode="json")
        self._actions = {a.name: a for a in description.actions}
        self._load_journal()
        sock = self._make_socket()
        try:
            sock.bind(self.address)
        except zmq.ZMQError:
            sock.close(linger=0)
            self._release_zap()
            raise
        self._socket = sock
        self._endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stopped = asyncio.Event()
        self._started_monotonic = time.monotonic()
        self._boot_id = uuid.uuid4().hex
        if self.journal_path is not None:
            self.journal_path.parent.mkdir(parents=True, exist_ok=True)
            self._journal = self.journal_path.open("a", encoding="utf-8")
            for state in self._cut_off:
                self._append_journal(state)
            self._cut_off = []
        self._tasks = [
            asyncio.create_task(self._receive_loop(), name=f"sdlab-recv-{self.name}"),
            asyncio.create_task(self._worker(), name=f"sdlab-worker-{self.name}"),
        ]
        logger.info(
            "instrument %s (%s) serving on %s", self.name, self.driver.driver_name, self._endpoint
        )
        return self._endpoint

    async def serve_forever(self) -> None:
        """Start (if needed) and serve until :meth:`stop` is called."""
        await self.start()
        assert self._stopped is not None
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop serving: cancel the running action, close the socket, journal and driver.

        Requests still queued or running are forgotten (they are not journaled).
        """
        if self._socket is None:
            return
        for poll in list(self._pollers):
            poll.abandon()
        tasks = self._tasks
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        # Queued and running requests die with the server (as after a crash).
        self._entries = {k: e for k, e in self._entries.items() if e.state.terminal}
        self._queue = asyncio.Queue()
        self._n_queued = 0
        self._running = None
        self._socket.close(linger=0)
        self._socket = None
        self._endpoint = None
        self._release_zap()
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        try:
            await self.driver.close()
        except Exception:
            logger.exception("instrument %s: driver close() raised", self.name)
        if self._stopped is not None:
            self._stopped.set()
        logger.info("instrument %s stopped", self.name)

    def _make_socket(self) -> zmq.asyncio.Socket:
        """A new ROUTER socket with this server's options (size limit, CURVE), unbound.

        A subclass that closes its socket and binds again (a simulated network drop) must
        use this, so that the new socket is as protected as the first.
        """
        ctx = self._context if self._context is not None else zmq.asyncio.Context.instance()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        # Frames far above the limit are dropped by libzmq (the peer is disconnected); those
        # just above it are read and answered with message_too_large.
        sock.setsockopt(zmq.MAXMSGSIZE, 4 * self.max_message_bytes + 4096)
        if self.curve is not None:
            self._zap = self.curve.apply(sock, self._zap)
        return sock

    def _release_zap(self) -> None:
        if self._zap is not None:
            self._zap.release()
            self._zap = None

    def request_state(self, request_id: str) -> RequestState | None:
        """The server's current state of a request, or ``None`` if it does not know it."""
        entry = self._entries.get(request_id)
        return None if entry is None else entry.state

    # ------------------------------------------------------------------ journal

    def _load_journal(self) -> None:
        """Reload the journal: the last line of each request id is its state.

        A request whose last line says ``running`` was cut off by a crash of the server: it
        is recorded as failed with code ``interrupted`` (retryable), so a controller asking
        about it learns that the action started but did not finish.
        """
        path = self.journal_path
        if path is None or not path.exists():
            return
        latest: dict[str, RequestState] = {}
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    state = RequestState.from_json(json.loads(line))
                except Exception as exc:  # a torn last line after a crash, or garbage
                    logger.warning("journal %s line %d ignored: %s", path, lineno, exc)
                    continue
                latest[state.request_id] = state
        loop = asyncio.get_running_loop()
        cut_off: list[RequestState] = []
        for state in latest.values():
            if not state.terminal:
                state = replace(
                    state,
                    state=RequestStatus.FAILED,
                    finished_at=utc_now(),
                    error=ErrorBody(
                        INTERRUPTED,
                        "the instrument server stopped while the action was running",
                        None,
                        True,
                    ),
                )
                cut_off.append(state)
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            self._entries[state.request_id] = _Entry(state, done)
        self._cut_off = cut_off
        logger.info(
            "instrument %s: %d requests loaded from %s (%d interrupted by a restart)",
            self.name,
            len(latest),
            path,
            len(cut_off),
        )

    def _append_journal(self, state: RequestState) -> None:
        if self._journal is None:
            return
        try:
            self._journal.write(json.dumps(state.to_json(), separators=(",", ":")) + "\n")
            self._journal.flush()
        except (OSError, ValueError):
            logger.exception("instrument %s: cannot write journal %s", self.name, self.journal_path)

    # ------------------------------------------------------------------ state changes

    def _advance(self, entry: _Entry, target: RequestStatus, **changes: Any) -> None:
        current = entry.state.state
        if target not in _TRANSITIONS.get(current, frozenset()):
            raise IllegalTransitionError(
                "request", current.value, target.value, entry.state.request_id
            )
        if current is RequestStatus.QUEUED:
            self._n_queued -= 1
        entry.state = replace(entry.state, state=target, **changes)
        if entry.state.terminal:
            if entry.state.finished_at is None:
                entry.state = replace(entry.state, finished_at=utc_now())
            if not entry.done.done():
                entry.done.set_result(None)
            self._append_journal(entry.state)

    # ------------------------------------------------------------------ worker

    async def _worker(self) -> None:
        """Run queued requests one at a time, in submission order."""
        while True:
            request_id = await self._queue.get()
            entry = self._entries.get(request_id)
            if entry is None or entry.state.state is not RequestStatus.QUEUED:
                continue  # cancelled while queued
            self._advance(entry, RequestStatus.RUNNING, started_at=utc_now())
            self._append_journal(entry.state)  # so a restarted server knows it began
            self._running = entry
            token = CURRENT_REQUEST.set(request_id)  # the run task's context carries it
            try:
                task = asyncio.create_task(
                    self.driver.run(entry.state.action, dict(entry.state.parameters))
                )
            finally:
                CURRENT_REQUEST.reset(token)
            entry.task = task
            try:
                measurements = await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the server is stopping
                if not entry.state.terminal:
                    self._advance(entry, RequestStatus.CANCELLED)
            except InstrumentError as exc:
                logger.warning("instrument %s request %s failed: %s", self.name, request_id, exc)
                self._fail(entry, ErrorBody(exc.code, str(exc), None, exc.retryable))
            except Exception as exc:
                logger.exception("instrument %s request %s: driver raised", self.name, request_id)
                self._fail(entry, ErrorBody(INTERNAL, f"driver raised {type(exc).__name__}: {exc}"))
            else:
                if not entry.state.terminal:  # else cancelled, and the driver ignored it
                    problem = _measurement_problem(measurements)
                    if problem is None:
                        self._advance(entry, RequestStatus.COMPLETED, measurements=measurements)
                    else:
                        logger.error("instrument %s request %s: %s", self.name, request_id, problem)
                        self._fail(entry, ErrorBody(INTERNAL, problem))
            finally:
                entry.task = None
                self._running = None

    def _fail(self, entry: _Entry, error: ErrorBody) -> None:
        if not entry.state.terminal:
            self._advance(entry, RequestStatus.FAILED, error=error)

    # ------------------------------------------------------------------ receiving

    async def _receive_loop(self) -> None:
        sock = self._socket
        assert sock is not None
        while True:
            try:
                frames = await sock.recv_multipart()
            except zmq.ZMQError as exc:
                logger.error("instrument %s: receive failed: %s", self.name, exc)
                await asyncio.sleep(0.01)
                continue
            if len(frames) < 2:
                continue  # a ROUTER always prefixes the peer identity; nothing to answer
            envelope, data = frames[:-1], frames[-1]
            try:
                await self._handle(envelope, data)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("instrument %s: error while handling a message", self.name)
                with contextlib.suppress(Exception):
                    await self._send(envelope, error_message(None, INTERNAL, "server error"))

    async def _handle(self, envelope: Frames, data: bytes) -> None:
        try:
            msg = decode_message(data, max_bytes=self.max_message_bytes)
        except MessageError as exc:
            logger.info("instrument %s: refused a message: %s", self.name, exc)
            frame = error_message(exc.message_id, exc.code, exc.detail, exc.field)
            await self._send(envelope, frame)
            return
        handler = self._handlers.get(msg.type)
        try:
            if handler is None:
                raise MessageError(UNKNOWN_TYPE, f"unknown message type {msg.type[:64]!r}", "type")
            await handler(envelope, msg)
        except MessageError as exc:
            logger.info("instrument %s: refused message %s: %s", self.name, msg.id, exc)
            await self._send(envelope, error_message(msg.id, exc.code, exc.detail, exc.field))

    async def _send(self, envelope: Frames, frame: bytes) -> None:
        if self._socket is not None:
            await self._socket.send_multipart([*envelope, frame])

    async def _reply(self, envelope: Frames, msg: Message, body: dict[str, Any]) -> None:
        await self._send(envelope, self._reply_frame(msg, body))

    def _reply_frame(self, msg: Message, body: dict[str, Any]) -> bytes:
        frame = encode_message(msg.type + ".reply", msg.id, body)
        if len(frame) > self.max_message_bytes:
            frame = error_message(
                msg.id,
                MESSAGE_TOO_LARGE,
                f"reply of {len(frame)} bytes exceeds the {self.max_message_bytes}-byte limit",
            )
        return frame

    async def _reply_state(
        self, envelope: Frames, msg: Message, entry: _Entry, wait_s: float
    ) -> None:
        if wait_s > 0 and not entry.done.done():
            _LongPoll(self, envelope, msg, entry, wait_s)
        else:
            await self._reply(envelope, msg, {"request": entry.state.to_json()})

    # ------------------------------------------------------------------ handlers

    async def _on_describe(self, envelope: Frames, msg: Message) -> None:
        await self._reply(envelope, msg, self._describe_body)

    async def _on_heartbeat(self, envelope: Frames, msg: Message) -> None:
        busy_with = [] if self._running is None else [self._running.state.request_id]
        busy = bool(busy_with) or self._n_queued > 0
        body = {
            "name": self.name,
            "state": "busy" if busy else "idle",
            "busy_with": busy_with,
            "queue_length": self._n_queued,
            "time": format_timestamp(utc_now()),
            "uptime_s": time.monotonic() - self._started_monotonic,
            "boot_id": self._boot_id,
        }
        await self._reply(envelope, msg, body)

    async def _on_submit(self, envelope: Frames, msg: Message) -> None:
        sub = parse_submit(msg.body)
        entry = self._entries.get(sub.request_id)
        if entry is None and sub.request_id in self._cancelled_unknown:
            entry = self._arrived_cancelled(sub.request_id, sub.action, sub.parameters)
        elif entry is not None:
            if entry.state.action != sub.action or entry.state.parameters != sub.parameters:
                raise MessageError(
                    REQUEST_ID_CONFLICT,
                    f"request {sub.request_id!r} was already submitted with a different action"
                    " or parameters",
                    "request_id",
                )
        else:
            spec = self._actions.get(sub.action)
            if spec is None:
                known = ", ".join(sorted(self._actions))
                raise MessageError(
                    UNKNOWN_ACTION, f"unknown action {sub.action[:64]!r} (known: {known})", "action"
                )
            try:
                spec.check(sub.parameters, instrument=self.name)
            except ParameterLimitError as exc:
                raise MessageError(
                    PARAMETER_OUT_OF_LIMITS, str(exc), f"parameters.{exc.parameter}"
                ) from None
            loop = asyncio.get_running_loop()
            state = RequestState(
                sub.request_id, sub.action, sub.parameters, RequestStatus.QUEUED, utc_now()
            )
            entry = _Entry(state, loop.create_future())
            self._entries[sub.request_id] = entry
            self._n_queued += 1
            self._queue.put_nowait(sub.request_id)
        await self._reply_state(envelope, msg, entry, sub.wait_s)

    def _known(self, msg: Message) -> _Entry:
        request_id = parse_request_id(msg.body)
        entry = self._entries.get(request_id)
        if entry is None:
            raise MessageError(UNKNOWN_REQUEST, f"no request {request_id!r}", "request_id")
        return entry

    def _arrived_cancelled(
        self, request_id: str, action: str, parameters: dict[str, Any]
    ) -> _Entry:
        """Record a submit whose id was cancelled before it arrived: CANCELLED, never run."""
        del self._cancelled_unknown[request_id]
        now = utc_now()
        state = RequestState(
            request_id, action, parameters, RequestStatus.CANCELLED, now, finished_at=now
        )
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        entry = _Entry(state, done)
        self._entries[request_id] = entry
        self._append_journal(state)
        logger.warning(
            "instrument %s: request %s arrived after it was cancelled: not run",
            self.name,
            request_id,
        )
        return entry

    async def _on_status(self, envelope: Frames, msg: Message) -> None:
        wait_s = parse_wait_s(msg.body)
        await self._reply_state(envelope, msg, self._known(msg), wait_s)

    async def _on_cancel(self, envelope: Frames, msg: Message) -> None:
        request_id = parse_request_id(msg.body)
        if request_id not in self._entries:
            # Not here (yet): a copy of its submit may still be on the way, delayed in a
            # network that was down (TCP sends it again when the link is back). Remember
            # the id, so that such a copy is not run after its client gave up on it.
            self._cancelled_unknown[request_id] = None
            while len(self._cancelled_unknown) > MAX_CANCELLED_UNKNOWN:
                del self._cancelled_unknown[next(iter(self._cancelled_unknown))]
        entry = self._known(msg)
        if entry.state.state is RequestStatus.QUEUED:
            self._advance(entry, RequestStatus.CANCELLED)
        elif entry.state.state is RequestStatus.RUNNING:
            task = entry.task
            self._advance(entry, RequestStatus.CANCELLED)
            if task is not None:
                task.cancel()
            logger.info(
                "instrument %s: running request %s cancelled", self.name, entry.state.request_id
            )
        await self._reply(envelope, msg, {"request": entry.state.to_json()})

    # ------------------------------------------------------------------ emergency stop

    async def _on_safe_state(self, envelope: Frames, msg: Message) -> None:
        """Cancel every queued and the running request, then make the instrument safe.

        The cancels happen at once, in this handler; the driver's :meth:`safe_state` runs in
        its own task (it may take a while: a furnace ramping down), so heartbeats and status
        requests are still answered meanwhile. The reply is sent when it returns.
        """
        cancelled: list[str] = []
        running = self._running
        if running is not None and not running.state.terminal:
            task = running.task
            self._advance(running, RequestStatus.CANCELLED)
            if task is not None:
                task.cancel()
            cancelled.append(running.state.request_id)
        for entry in self._entries.values():
            if entry.state.state is RequestStatus.QUEUED:
                self._advance(entry, RequestStatus.CANCELLED)
                cancelled.append(entry.state.request_id)
        if cancelled:
            logger.warning("instrument %s: emergency stop cancelled %s", self.name, cancelled)
        stopping = running.task if running is not None else None
        making_safe = asyncio.create_task(
            self._make_safe(envelope, msg, cancelled, stopping),
            name=f"sdlab-safe-state-{self.name}",
        )
        self._tasks.append(making_safe)  # so that stop() cancels it
        making_safe.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def _make_safe(
        self,
        envelope: Frames,
        msg: Message,
        cancelled: list[str],
        stopping: asyncio.Task[list[Measurement]] | None,
    ) -> None:
        if stopping is not None:  # let the cancelled action unwind before the safe state
            await asyncio.wait({stopping}, timeout=SAFE_STATE_UNWIND_S)
        try:
            description = await self.driver.safe_state()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("instrument %s: safe_state() raised", self.name)
            code = exc.code if isinstance(exc, InstrumentError) else SAFE_STATE_FAILED
            await self._send(envelope, error_message(msg.id, code, f"safe state failed: {exc}"))
            return
        logger.warning("instrument %s in its safe state: %s", self.name, description)
        body = SafeStateReply(self.name, str(description) or "safe", cancelled).to_json()
        await self._reply(envelope, msg, body)


SAFE_STATE_UNWIND_S = 5.0
"""How long the server waits for a cancelled action to unwind before calling the driver's
``safe_state`` anyway, in seconds."""


class _LongPoll:
    """A held ``submit``/``status`` reply: sent when the request turns terminal or the
    long-poll window ends, whichever comes first (callbacks, no task, for low latency)."""

    __slots__ = ("entry", "envelope", "msg", "server", "timer")

    def __init__(
        self, server: InstrumentServer, envelope: Frames, msg: Message, entry: _Entry, wait_s: float
    ) -> None:
        self.server = server
        self.envelope = envelope
        self.msg = msg
        self.entry = entry
        self.timer = asyncio.get_running_loop().call_later(wait_s, self.fire)
        entry.done.add_done_callback(self.fire)
        server._pollers.add(self)

    def fire(self, _: object = None) -> None:
        """Send the reply now (once)."""
        if self not in self.server._pollers:
            return
        self.abandon()
        sock = self.server._socket
        if sock is None:
            return
        frame = self.server._reply_frame(self.msg, {"request": self.entry.state.to_json()})
        sent = sock.send_multipart([*self.envelope, frame])
        if isinstance(sent, asyncio.Future):
            sent.add_done_callback(_consume_exception)

    def abandon(self) -> None:
        """Forget the held reply without sending it."""
        self.server._pollers.discard(self)
        self.timer.cancel()
        self.entry.done.remove_done_callback(self.fire)


def _consume_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("reply not sent: %s", future.exception())


def _measurement_problem(measurements: object) -> str | None:
    """Why a driver's return value cannot be sent, or ``None`` if it can."""
    if not isinstance(measurements, list):
        return f"driver returned {type(measurements).__name__}, not a list of Measurement"
    for m in measurements:
        if not isinstance(m, Measurement) or not isinstance(m.name, str):
            return f"driver returned {m!r}, not a Measurement"
        for value in (m.value, m.uncertainty):
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                return f"measurement {m.name!r}: {value!r} is not a finite number or null"
        if m.array is not None:
            try:
                json.dumps(m.array, allow_nan=False)
            except (TypeError, ValueError) as exc:
                return f"measurement {m.name!r}: array is not finite JSON numbers: {exc}"
    return None
