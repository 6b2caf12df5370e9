"""The dashboard app factory.

``create_app(settings)`` connects to the store (migrating it to the current schema), and
wires the JSON API, the live stream and the pages. Errors the store raises on purpose become
4xx answers; anything unexpected is logged and answered 500 without internals.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from controller.api import (
    events,
    pages,
    pages_lab,
    routes_campaigns,
    routes_estop,
    routes_lab,
    routes_store,
    routes_tasks,
    routes_users,
)
from controller.api.runs import RunLauncher
from controller.api.schemas import COMMON_RESPONSES
from controller.api.security import (
    BodyLimit,
    LoginLimiter,
    LoginLimits,
    SecurityHeaders,
    validation_error,
)
from controller.api.settings import ApiSettings
from controller.store import make_engine, migrate, safe_url, session_factory
from models.errors import IllegalTransitionError, StoreError

logger = logging.getLogger(__name__)

DESCRIPTION = """
Operator API of an sdlab experiment store. Authenticate with `Authorization: Bearer <token>`
(tokens are made with `sdlab users add NAME --role viewer|operator|admin`). Viewers read;
operators also pause, resume, approve and take instruments out of service; admins also
create, start and abort campaigns and manage users. Controls answer 202 with a command id:
the campaign's controller applies the command within a poll interval, and
`GET /api/commands/{id}` tells whether it was APPLIED or REFUSED.
"""


def create_app(settings: ApiSettings, *, launcher: RunLauncher | None = None) -> FastAPI:
    """Build the dashboard app.

    Args:
        settings: Database, data directory and the other settings.
        launcher: Starts ``sdlab run`` for campaigns (one is made from ``settings`` if not
            given).

    Returns:
        The FastAPI app.

    Raises:
        StoreError: If the database cannot be reached or migrated.
    """
    engine = make_engine(settings.db_url, immediate_writes=settings.sqlite_immediate_writes)
    migrate(engine)
    runs = launcher or RunLauncher(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logger.info("dashboard on database %s", safe_url(settings.db_url))
        yield
        engine.dispose()

    app = FastAPI(
        title="sdlab dashboard",
        version="1",
        description=DESCRIPTION,
        docs_url=None,  # served by pages.docs, behind authentication, without a CDN
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
        responses=COMMON_RESPONSES,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.factory = session_factory(engine)
    app.state.launcher = runs
    app.state.stopping = threading.Event()  # set by sdlab serve when asked to stop
    app.state.login_limiter = LoginLimiter(
        LoginLimits(
            per_user=settings.login_failures_per_user,
            per_address=settings.login_failures_per_address,
            window_s=settings.login_window_s,
            lockout_s=settings.login_lockout_s,
        )
    )

    app.include_router(routes_campaigns.router)
    app.include_router(routes_estop.router)
    app.include_router(routes_tasks.router)
    app.include_router(routes_tasks.pages)
    app.include_router(routes_store.router)
    app.include_router(routes_lab.router)
    app.include_router(routes_users.router)
    app.include_router(events.router)
    app.include_router(pages.router)
    app.include_router(pages_lab.router)
    app.add_exception_handler(pages.LoginRequired, pages.login_redirect)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)
    # outermost first: the body limit runs before anything reads or authenticates
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.exception_handler(IllegalTransitionError)
    async def _illegal(request: Request, exc: IllegalTransitionError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        logger.warning("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=409)

    return app
