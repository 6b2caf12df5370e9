"""Hardening: login throttling and lockout, body size limit, security headers, validation
errors without the input, server-chosen login messages, one set of password rules, and
no plain-HTTP serving beyond loopback without saying so."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select

from controller.api import users
from controller.api.app import create_app
from controller.api.security import LoginLimiter, LoginLimits
from controller.cli import cli
from controller.store import transaction
from models.tables import EventRow
from tests.controller.api_store import RecordingLauncher, bearer, dash_settings, make_users
from tests.controller.conftest import Dashboard


def _form(client: TestClient) -> str:
    page = client.get("/login")
    m = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert m is not None
    return m.group(1)


def _login(client: TestClient, name: str, secret: str) -> int:
    data = {"name": name, "secret": secret, "csrf_token": _form(client)}
    return client.post("/login", data=data, follow_redirects=False).status_code


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[Dashboard]:
    """A dashboard that locks a name out after 3 failures and an address after 6."""
    settings = dash_settings(tmp_path, login_failures_per_user=3, login_failures_per_address=6)
    app = create_app(settings, launcher=RecordingLauncher(settings))
    tokens = make_users(app.state.factory, settings.kdf_iterations)
    with TestClient(app) as client:
        yield Dashboard(client, app.state.factory, tokens, None, None, settings)  # type: ignore[arg-type]


def test_a_user_is_locked_out_after_repeated_failures_and_an_alarm_is_raised(
    strict: Dashboard,
) -> None:
    assert [_login(strict.client, "operator", "wrong-guess") for _ in range(3)] == [401] * 3
    # locked: even the right password is refused now, without being checked
    assert _login(strict.client, "operator", "operator-password") == 429
    res = strict.client.post(
        "/login",
        data={"name": "operator", "secret": "x", "csrf_token": _form(strict.client)},
        follow_redirects=False,
    )
    assert res.status_code == 429
    assert int(res.headers["Retry-After"]) > 0
    assert "Too many failed logins" in res.text
    assert _login(strict.client, "viewer", "viewer-password") == 303  # others are not
    with transaction(strict.factory, read_only=True) as s:
        alarms = s.scalars(select(EventRow).where(EventRow.kind == "alarm.login_failures")).all()
    assert len(alarms) == 1
    assert "user operator locked out" in alarms[0].message


def test_an_address_is_locked_out_after_failures_under_many_names(strict: Dashboard) -> None:
    codes = [_login(strict.client, f"nobody{i}", "guess-guess") for i in range(6)]
    assert codes == [401] * 6
    assert _login(strict.client, "admin", "admin-password") == 429


def test_lockouts_end_and_success_forgets_failures() -> None:
    now = [0.0]
    limiter = LoginLimiter(LoginLimits(per_user=2, window_s=60, lockout_s=30), clock=lambda: now[0])
    assert limiter.failed("ada", "1.2.3.4") == []
    limiter.succeeded("ada")
    assert limiter.failed("ada", "1.2.3.4") == []  # the count started again
    assert limiter.failed("ada", "1.2.3.4") == ["user:ada"]
    assert limiter.locked_for("ada", "5.6.7.8") == 30
    now[0] = 31.0
    assert limiter.locked_for("ada", "5.6.7.8") == 0.0


def test_unknown_names_cost_as_many_iterations_as_real_hashes(
    dash: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    real = users.verify_secret
    monkeypatch.setattr(
        users, "verify_secret", lambda sec, stored: checked.append(stored) or real(sec, stored)
    )
    with transaction(dash.factory, read_only=True) as s:
        assert users.check_login(s, "no-such-user", "x", dummy_iterations=200_000) is None
    assert [h.split("$")[1] for h in checked] == ["200000"]


def test_a_big_anonymous_body_is_refused_before_it_is_read(dash: Dashboard) -> None:
    limit = dash.settings.max_body_bytes
    res = dash.client.post(
        "/api/users",
        content=b"{" + b" " * limit + b"}",
        headers={"content-type": "application/json"},
    )
    assert res.status_code == 413  # not 401: nothing was parsed or authenticated
    assert "larger than" in res.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    res = dash.client.post(
        "/api/users", content=chunks(), headers={"content-type": "application/json"}
    )
    assert res.status_code == 413
    ok = dash.client.get("/health")
    assert ok.status_code == 200


def test_security_headers_on_every_response(dash: Dashboard) -> None:
    for res in (
        dash.client.get("/health"),
        dash.client.get("/login"),
        dash.client.get("/api/campaigns"),  # 401
        dash.client.get("/api/campaigns", headers=bearer(dash.tokens["viewer"])),
        dash.client.get("/static/app.js", headers=bearer(dash.tokens["viewer"])),
    ):
        csp = res.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp
        assert "script-src 'self';" in csp  # no inline script on the pages
        assert res.headers["x-frame-options"] == "DENY"
        assert res.headers["x-content-type-options"] == "nosniff"
        assert res.headers["referrer-policy"] == "same-origin"


def test_validation_errors_do_not_echo_the_input(dash: Dashboard) -> None:
    secret = "S3cret-" + "x" * 300
    res = dash.client.post(
        "/api/users",
        json={"name": "eve", "role": "emperor", "password": secret},
        headers=bearer(dash.tokens["admin"]),
    )
    assert res.status_code == 422
    assert secret not in res.text
    assert "emperor" not in res.text
    fields = {tuple(p["loc"]) for p in res.json()["detail"]}
    assert ("body", "role") in fields
    assert ("body", "password") in fields


def test_the_login_page_shows_only_messages_the_server_chose(dash: Dashboard) -> None:
    page = dash.client.get("/login?error=Your+account+is+suspended,+call+555-0100")
    assert "suspended" not in page.text
    assert "555-0100" not in page.text


def test_the_cli_and_the_api_apply_the_same_password_rules(dash: Dashboard, tmp_path: Path) -> None:
    res = dash.client.post(
        "/api/users",
        json={"name": "eve", "role": "viewer", "password": "short"},
        headers=bearer(dash.tokens["admin"]),
    )
    assert res.status_code == 422
    api_message = res.json()["detail"]
    assert api_message.startswith("password: must be at least")
    out = CliRunner().invoke(
        cli,
        [
            "users",
            "add",
            "eve",
            "--role",
            "viewer",
            "--password",
            "--db",
            f"sqlite:///{tmp_path}/u.db",
        ],
        input="short\nshort\n",
    )
    assert out.exit_code != 0
    assert api_message in out.output


def test_serving_beyond_loopback_needs_secure_cookies_or_insecure(tmp_path: Path) -> None:
    out = CliRunner().invoke(
        cli, ["serve", "--host", "0.0.0.0", "--db", f"sqlite:///{tmp_path}/s.db"]
    )
    assert out.exit_code != 0
    assert "--secure-cookies" in out.output
    assert "--insecure" in out.output
