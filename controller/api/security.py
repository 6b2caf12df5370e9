"""Defences that sit in front of every route: body size limit, security headers, login
throttling, and validation errors that never echo what was sent.

* :class:`BodyLimit` (pure ASGI, outermost) answers 413 before anything is parsed or
  authenticated: at once when ``Content-Length`` is too large, and as soon as a streamed
  (chunked) body passes the limit.
* :class:`SecurityHeaders` adds ``Content-Security-Policy`` (with ``frame-ancestors
  'none'``), ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff`` and
  ``Referrer-Policy`` to every response; a route may send its own CSP (Swagger UI does).
* :class:`LoginLimiter` counts failed logins per user name and per client address in a
  sliding window; past the limit the name (or address) is locked out for a while, logins
  are refused with 429 without looking at the password, and an ``alarm.login_failures``
  event tells the operator.
* :func:`validation_error` answers 422 with each problem's location, message and type, but
  never the input (which may hold a password).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
"""The pages' policy: scripts only from this app (no inline script), no framing.

Inline styles stay allowed: plotly.js styles the charts it draws with them."""

HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


async def _reply(send: Send, status: int, detail: str) -> None:
    body = ('{"detail": "' + detail + '"}').encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse request bodies larger than ``max_bytes`` with 413, before they are read.

    Args:
        app: The ASGI app behind.
        max_bytes: Largest body accepted, in bytes.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request body larger than {self.max_bytes} bytes"
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _reply(send, 400, "malformed Content-Length")
                    return
                if declared > self.max_bytes:
                    logger.warning("refused %s %s: %s", scope["method"], scope["path"], too_large)
                    await _reply(send, 413, too_large)
                    return
        seen = 0
        exceeded = False
        replied = False

        async def counted() -> Message:
            nonlocal seen, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True  # the app sees the client leave, and reads no further
                    logger.warning(
                        "refused %s %s: %s (streamed)", scope["method"], scope["path"], too_large
                    )
                    return {"type": "http.disconnect"}
            return message

        async def watched(message: Message) -> None:
            nonlocal replied
            if not exceeded:
                await send(message)
            elif not replied and message["type"] == "http.response.start":
                replied = True  # whatever the app answers to the cut body becomes a 413
                await _reply(send, 413, too_large)

        try:
            await self.app(scope, counted, watched)
        except Exception:
            if not exceeded:
                raise
            if not replied:
                await _reply(send, 413, too_large)


class SecurityHeaders:
    """Add the security headers to every HTTP response (see the module docs)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {n.lower() for n, _ in headers}
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", CSP.encode()))
                headers += [(n, v) for n, v in HEADERS if n not in names]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


@dataclass(frozen=True)
class LoginLimits:
    """How many failed logins are tolerated.

    Attributes:
        per_user: Failures of one user name within ``window_s`` before it is locked out.
        per_address: Failures from one client address within ``window_s`` before it is.
        window_s: The sliding window, in seconds.
        lockout_s: How long a lockout lasts, in seconds.
    """

    per_user: int = 5
    per_address: int = 20
    window_s: float = 900.0
    lockout_s: float = 900.0


class LoginLimiter:
    """Failed logins per user name and per client address, and the lockouts they cause.

    Kept in the server's memory: a restart forgets them (the lockout is a brake on guessing,
    not an account state). Thread-safe.
    """

    def __init__(self, limits: LoginLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._locked: dict[str, float] = {}
        self._lock = threading.Lock()

    def _key_locked(self, key: str, now: float) -> float:
        until = self._locked.get(key)
        if until is None or until <= now:
            self._locked.pop(key, None)
            return 0.0
        return until - now

    def locked_for(self, name: str, address: str) -> float:
        """Seconds until ``name`` from ``address`` may try again (0: now)."""
        now = self._clock()
        with self._lock:
            return max(
                self._key_locked(f"user:{name}", now), self._key_locked(f"addr:{address}", now)
            )

    def failed(self, name: str, address: str) -> list[str]:
        """Count a failed login; returns what became locked out by it (``user:x``, ...)."""
        now = self._clock()
        newly: list[str] = []
        with self._lock:
            for key, limit in (
                (f"user:{name}", self.limits.per_user),
                (f"addr:{address}", self.limits.per_address),
            ):
                q = self._failures.setdefault(key, deque())
                q.append(now)
                while q and q[0] < now - self.limits.window_s:
                    q.popleft()
                if len(q) >= limit and self._key_locked(key, now) == 0.0:
                    self._locked[key] = now + self.limits.lockout_s
                    q.clear()
                    newly.append(key)
        return newly

    def succeeded(self, name: str) -> None:
        """Forget the user's failures after a successful login."""
        with self._lock:
            self._failures.pop(f"user:{name}", None)


def _problem(err: dict[str, Any]) -> dict[str, Any]:
    return {
        "loc": list(err.get("loc", ())),
        "msg": str(err.get("msg", "")),
        "type": err.get("type"),
    }


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with ``{"detail": [{"loc", "msg", "type"}]}``: never the input itself."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"detail": [_problem(e) for e in errors[:50]]}, status_code=422)
