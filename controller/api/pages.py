"""Server-rendered pages: login, a campaign's page, and the API docs (the lab's pages are in
:mod:`controller.api.pages_lab`).

The pages' scripts (``static/app.js``), the chart library (the ``plotly.min.js`` shipped
inside the ``plotly`` package) and Swagger UI (from ``swagger-ui-bundle``) are served by the
app itself, so the dashboard works in a lab without internet access. A browser that is not
logged in is sent to the login form; everything but the login form and ``/health`` needs a
session or a token.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from controller.api.auth import (
    SESSION_COOKIE,
    authenticate,
    factory_of,
    refuse,
    settings_of,
    viewer,
)
from controller.api.health import duration_words
from controller.api.routes_campaigns import CampaignId, get_campaign_or_404
from controller.api.security import CSP, LoginLimiter
from controller.api.users import Principal, Role, check_login, close_session, open_session
from controller.api.views import CONTROLLER_LOST, controller_view, is_controller_lost
from controller.store import add_event, transaction

logger = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))


def when(t: datetime | str | None) -> str:
    """A time as every page shows it: ``2026-03-02 14:05:09 UTC`` (empty for ``None``).

    The pages' script formats times the same way (``sdlab.when``), so one page never mixes
    zones or formats.
    """
    if t is None or t == "":
        return ""
    at = datetime.fromisoformat(t) if isinstance(t, str) else t
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


templates.env.filters["when"] = when
templates.env.filters["duration"] = lambda s: "" if s is None else duration_words(float(s))

LOGIN_CSRF_COOKIE = "sdlab_login_csrf"
"""Double-submit cookie that protects the login form against login CSRF."""


def _static_files() -> dict[str, Path]:
    """The files ``/static/{name}`` serves."""
    import swagger_ui_bundle  # type: ignore[import-untyped]

    swagger = Path(swagger_ui_bundle.swagger_ui_path)
    plotly = Path(str(files("plotly") / "package_data" / "plotly.min.js"))
    return {
        "app.js": HERE / "static" / "app.js",
        "lab.js": HERE / "static" / "lab.js",
        "parallel.js": HERE / "static" / "parallel.js",
        "plotly.min.js": plotly,
        "swagger-ui-bundle.js": swagger / "swagger-ui-bundle.js",
        "swagger-ui.css": swagger / "swagger-ui.css",
    }


STATIC = _static_files()


class LoginRequired(Exception):
    """A page was asked for without a valid session; the browser goes to the login form."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path
        super().__init__(next_path)


async def page_user(request: Request) -> Principal:
    """The logged-in user of a page (a dependency); otherwise redirect to the login form."""
    try:
        return await authenticate(request, None, None)
    except HTTPException as exc:
        if exc.status_code == 401:
            raise LoginRequired(request.url.path) from None
        raise


def login_redirect(request: Request, exc: LoginRequired) -> Response:
    """Exception handler: send the browser to the login form."""
    response = RedirectResponse(f"/login?next={exc.next_path}", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


PageUser = Annotated[Principal, Depends(page_user)]


def _safe_next(path: str | None) -> str:
    if path and path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/"


def _render(request: Request, template: str, who: Principal | None, **ctx: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        template,
        {
            "user": who,
            "csrf": who.csrf_token if who else None,
            "is_operator": who is not None and who.role.allows(Role.OPERATOR),
            "is_admin": who is not None and who.role.allows(Role.ADMIN),
            **ctx,
        },
    )


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness check (no authentication)."""
    return {"status": "ok"}


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    """The login form (no authentication). It shows no text taken from the query string."""
    token = secrets.token_urlsafe(24)
    response = _render(request, "login.html", None, next=_safe_next(next), login_csrf=token)
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=settings_of(request).secure_cookies,
        max_age=3600,
    )
    return response


def limiter_of(request: Request) -> LoginLimiter:
    """The app's failed-login counter."""
    limiter: LoginLimiter = request.app.state.login_limiter
    return limiter


def _login_refused(request: Request, next: str, csrf: str, error: str, status: int) -> Response:
    response = _render(
        request, "login.html", None, next=_safe_next(next), login_csrf=csrf, error=error
    )
    response.status_code = status
    return response


@router.post("/login")
async def login(
    request: Request,
    name: Annotated[str, Form(max_length=64)],
    secret: Annotated[str, Form(max_length=512)],
    csrf_token: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=512)] = "/",
) -> Response:
    """Check a name and password (or API token) and open a session.

    Failed logins are counted per name and per client address; past the limit, logins are
    refused (429, with ``Retry-After``) without checking the password, and an alarm is
    recorded.
    """
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(csrf_token.encode(), expected.encode()):
        raise refuse(request, 403, "login form expired; reload it", name)
    settings = settings_of(request)
    limiter = limiter_of(request)
    address = request.client.host if request.client else "?"
    wait_s = limiter.locked_for(name, address)
    if wait_s > 0:
        refuse(request, 429, "too many failed logins", name)
        minutes = max(1, round(wait_s / 60))
        response = _login_refused(
            request,
            next,
            expected,
            f"Too many failed logins. Try again in about {minutes} min.",
            429,
        )
        response.headers["Retry-After"] = str(int(wait_s) + 1)
        return response

    def _check() -> tuple[str, str] | None:
        with transaction(factory_of(request)) as s:
            user = check_login(s, name, secret, dummy_iterations=settings.kdf_iterations)
            return None if user is None else open_session(s, user, settings.session_ttl_s)

    opened = await run_in_threadpool(_check)
    if opened is None:
        refuse(request, 401, "wrong name or password", name)
        locked = limiter.failed(name, address)
        if locked:
            await run_in_threadpool(_login_alarm, request, name, address, locked)
        return _login_refused(request, next, expected, "Wrong name or password.", 401)
    limiter.succeeded(name)
    cookie, _ = opened
    logger.info("user %s logged in", name)
    redirect = RedirectResponse(_safe_next(next), status_code=303)
    redirect.set_cookie(
        SESSION_COOKIE,
        cookie,
        httponly=True,
        samesite="strict",
        secure=settings.secure_cookies,
        max_age=int(settings.session_ttl_s),
    )
    redirect.delete_cookie(LOGIN_CSRF_COOKIE)
    return redirect


def _login_alarm(request: Request, name: str, address: str, locked: list[str]) -> None:
    """Record the lockout as an alarm (best effort: the refusal stands either way)."""
    limits = limiter_of(request).limits
    what = " and ".join(
        f"user {k.removeprefix('user:')}" if k.startswith("user:") else f"address {address}"
        for k in locked
    )
    message = (
        f"repeated failed logins: {what} locked out for {limits.lockout_s / 60:g} min "
        f"(last attempt: user {name!r} from {address})"
    )
    logger.warning("%s", message)
    try:
        with transaction(factory_of(request)) as s:
            add_event(
                s,
                "alarm.login_failures",
                message,
                data={"locked": locked, "address": address},
                actor="dashboard",
            )
    except Exception as exc:
        logger.error("could not record the login alarm: %s", type(exc).__name__)


@router.post("/logout")
async def logout(request: Request, who: PageUser) -> Response:
    """End the session (the form carries the CSRF token)."""
    cookie = request.cookies.get(SESSION_COOKIE)

    def _close() -> None:
        if cookie:
            with transaction(factory_of(request)) as s:
                close_session(s, cookie)

    await run_in_threadpool(_close)
    logger.info("user %s logged out", who.name)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
def campaign_page(campaign_id: CampaignId, request: Request, who: PageUser) -> Response:
    """A campaign's page: status, description, best result, controls, last decision,
    charts, instruments, experiments."""
    with transaction(factory_of(request), read_only=True) as s:
        c = get_campaign_or_404(s, campaign_id)
        lost = is_controller_lost(c.status, controller_view(s, c.id))
        name = c.name
        status = CONTROLLER_LOST if lost else c.status.value
        description = dict(c.spec).get("campaign", {}).get("description", "")
    return _render(
        request,
        "campaign.html",
        who,
        campaign_id=campaign_id,
        name=name,
        status=status,
        status_class="LOST" if lost else status,
        description=description,
    )


@router.get("/static/{name}")
def static(name: str, _: Annotated[Principal, Depends(viewer)]) -> Response:
    """The pages' script, the chart library and Swagger UI's files."""
    path = STATIC.get(name)
    if path is None or not path.is_file():
        raise HTTPException(404, f"no static file {name!r}")
    media = "text/css" if name.endswith(".css") else "text/javascript"
    return FileResponse(path, media_type=media, headers={"Cache-Control": "max-age=3600"})


@router.get("/openapi.json")
def openapi(request: Request, _: Annotated[Principal, Depends(viewer)]) -> JSONResponse:
    """The OpenAPI schema of the JSON API."""
    return JSONResponse(request.app.openapi())


@router.get("/docs", response_class=HTMLResponse)
def docs(request: Request, _: PageUser) -> Response:
    """Swagger UI, served from this app."""
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="sdlab API",
        swagger_js_url="/static/swagger-ui-bundle.js",
        swagger_css_url="/static/swagger-ui.css",
        swagger_favicon_url="data:,",
    )
    # Swagger UI starts from an inline script: allowed on this page only
    page.headers["Content-Security-Policy"] = CSP.replace(
        "script-src 'self'", "script-src 'self' 'unsafe-inline'"
    )
    return page
