"""Authentication and authorisation of every request.

Scripts send ``Authorization: Bearer <token>``; browsers carry the session cookie set by the
login form. A cookie-authenticated request that changes something (any method but GET, HEAD
and OPTIONS) must also carry the session's CSRF token, in the ``X-CSRF-Token`` header or a
``csrf_token`` form field; tokens sent in a header need none, since a browser never adds
them on its own. A refused request is answered 401 (who are you?) or 403 (not allowed) and
logged with its method, path, client and user, never with a secret.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from controller.api.settings import ApiSettings
from controller.api.users import (
    Principal,
    Role,
    note_token_use,
    principal_for_session,
    token_use_due,
    user_for_token,
)
from controller.store import transaction

logger = logging.getLogger(__name__)

SESSION_COOKIE = "sdlab_session"
"""Name of the browser session cookie."""

CSRF_HEADER = "X-CSRF-Token"
"""Header that carries the CSRF token of a cookie-authenticated request."""

CSRF_FIELD = "csrf_token"
"""Form field that carries the CSRF token of a cookie-authenticated form."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def settings_of(request: Request) -> ApiSettings:
    """The app's settings (a dependency)."""
    settings: ApiSettings = request.app.state.settings
    return settings


def factory_of(request: Request) -> sessionmaker[Session]:
    """The app's session factory."""
    factory: sessionmaker[Session] = request.app.state.factory
    return factory


TOKEN_USE_LOCK_TIMEOUT_S = 0.5
"""How long recording a token's use may wait for the database before it is skipped."""


def db(request: Request) -> Iterator[Session]:
    """A database session in one transaction for the request (a dependency).

    It commits when the handler returns and rolls back when it raises, so a refused request
    changes nothing. GET and HEAD requests only read (see
    :func:`controller.store.transaction`); the others take the write lock up front.
    Handlers take it as :data:`DbSession`, which commits before the answer is sent.
    """
    with transaction(factory_of(request), read_only=request.method in ("GET", "HEAD")) as s:
        yield s


DbSession = Annotated[Session, Depends(db, scope="function")]
"""A handler's database session. ``scope="function"`` commits it before the answer goes out:
FastAPI's default runs a dependency's code after ``yield`` once the response is sent, so a
client answered 201 could read the store before the commit (and not find what it made), and
a failed commit would follow an answer that said it succeeded."""


def refuse(request: Request, status: int, detail: str, who: str | None = None) -> HTTPException:
    """Log a refused request and return the exception that answers it."""
    client = request.client.host if request.client else "?"
    logger.warning(
        "refused %s %s from %s (user %s): %d %s",
        request.method,
        request.url.path,
        client,
        who or "anonymous",
        status,
        detail,
    )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return HTTPException(status_code=status, detail=detail, headers=headers)


def note_use(factory: sessionmaker[Session], token: str) -> None:
    """Record that ``token`` was used, best effort: a busy database skips it (logged)."""
    try:
        with transaction(factory, lock_timeout_s=TOKEN_USE_LOCK_TIMEOUT_S) as s:
            note_token_use(s, token)
    except Exception as exc:
        logger.warning("token use not recorded (%s); the request goes on", type(exc).__name__)


def _lookup(factory: sessionmaker[Session], token: str | None, cookie: str | None) -> Principal:
    due = False
    with transaction(factory, read_only=True) as s:
        if token is not None:
            user = user_for_token(s, token)
            if user is None:
                raise LookupError("invalid or revoked API token")
            principal = Principal(user.name, Role(user.role), "token")
            due = token_use_due(s, token)
        elif cookie is not None:
            by_cookie = principal_for_session(s, cookie)
            if by_cookie is None:
                raise LookupError("session expired or unknown; log in again")
            return by_cookie
        else:
            raise LookupError("authentication required")
    if due and token is not None:
        note_use(factory, token)
    return principal


async def _csrf_ok(request: Request, expected: str) -> bool:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    return sent is not None and hmac.compare_digest(sent.encode(), expected.encode())


_bearer_scheme = HTTPBearer(auto_error=False, description="An API token from sdlab users add")
_cookie_scheme = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, description="The login form's session"
)


async def authenticate(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
    _cookie: Annotated[str | None, Depends(_cookie_scheme)],
) -> Principal:
    """Who sent the request (a dependency); 401 if nobody valid, 403 on a missing CSRF token.

    The two security schemes document the credentials in the OpenAPI schema; the header
    and cookie are read here, so that a malformed header is refused and logged too.

    Raises:
        HTTPException: 401 or 403, logged.
    """
    header = request.headers.get("authorization")
    token: str | None = None
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise refuse(request, 401, "expected 'Authorization: Bearer <token>'")
        token = value.strip()
    cookie = request.cookies.get(SESSION_COOKIE) if token is None else None
    try:
        principal = await run_in_threadpool(_lookup, factory_of(request), token, cookie)
    except LookupError as exc:
        raise refuse(request, 401, str(exc)) from None
    if (
        principal.via == "session"
        and request.method not in SAFE_METHODS
        and not await _csrf_ok(request, principal.csrf_token or "")
    ):
        raise refuse(request, 403, "missing or wrong CSRF token", principal.name)
    request.state.principal = principal
    return principal


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets through users whose role allows ``role``, else 403."""

    async def dependency(
        request: Request, principal: Annotated[Principal, Depends(authenticate)]
    ) -> Principal:
        if not principal.role.allows(role):
            raise refuse(
                request,
                403,
                f"role {principal.role.value} may not do this (needs {role.value})",
                principal.name,
            )
        return principal

    return dependency


viewer = require(Role.VIEWER)
operator = require(Role.OPERATOR)
admin = require(Role.ADMIN)
