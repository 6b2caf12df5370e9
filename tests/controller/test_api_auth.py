"""Who may do what on the dashboard: tokens, the login form, sessions, CSRF and roles."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from sqlalchemy import func, select

from controller.api.users import (
    Role,
    check_login,
    hash_secret,
    user_for_token,
    verify_secret,
)
from controller.store import transaction
from models.tables import CommandRow, EventRow, UserRow
from tests.controller.api_store import Populated, bearer
from tests.controller.conftest import Dashboard

CAMPAIGN_TOML = b"""
[campaign]
name = "uploaded"
[[parameters]]
name = "x"
type = "continuous"
lower = 0.0
upper = 1.0
[[objectives]]
name = "y"
direction = "maximize"
[[workflow]]
kind = "station"
action = "measure"
[[instruments]]
name = "s1"
kind = "station"
address = "tcp://127.0.0.1:5999"
[planner]
name = "random"
[budget]
max_experiments = 3
"""


def endpoints(p: Populated) -> list[tuple[str, str, dict[str, Any], str]]:
    """Every endpoint as (method, path, request kwargs, least role allowed); writes last."""
    c = f"/api/campaigns/{p.campaign_id}"
    return [
        ("GET", "/api/campaigns", {}, "viewer"),
        ("GET", c, {}, "viewer"),
        ("GET", f"{c}/charts", {}, "viewer"),
        ("GET", f"{c}/experiments?status=COMPLETED", {}, "viewer"),
        ("GET", f"/api/experiments/{p.completed[0]}", {}, "viewer"),
        ("GET", f"{c}/instruments", {}, "viewer"),
        ("GET", "/api/events", {}, "viewer"),
        ("GET", "/api/commands/1", {}, "viewer"),
        ("GET", f"{c}/stream?max_s=0.05", {}, "viewer"),
        ("GET", "/openapi.json", {}, "viewer"),
        ("GET", "/static/app.js", {}, "viewer"),
        ("GET", "/api/overview", {}, "viewer"),
        ("GET", "/api/instruments", {}, "viewer"),
        ("GET", "/api/lab-instruments", {}, "viewer"),
        ("GET", "/api/alarms", {}, "viewer"),
        ("GET", "/api/approvals", {}, "viewer"),
        ("GET", "/static/lab.js", {}, "viewer"),
        ("GET", "/api/users", {}, "admin"),
        ("POST", f"{c}/pause", {}, "operator"),
        ("POST", f"{c}/resume", {}, "operator"),
        ("POST", f"{c}/approve", {"json": {"experiments": [p.proposed]}}, "operator"),
        ("POST", f"{c}/reject", {"json": {"experiments": [p.proposed]}}, "operator"),
        (
            "POST",
            f"{c}/experiments/{p.interrupted}/resolve",
            {"json": {"action": "rerun"}},
            "operator",
        ),
        ("POST", f"{c}/instruments/station-1/out", {"json": {"reason": "x"}}, "operator"),
        ("POST", f"{c}/instruments/station-1/in", {}, "operator"),
        ("POST", f"{c}/start", {}, "admin"),
        ("POST", "/api/campaigns", {"files": {"file": ("c.toml", CAMPAIGN_TOML)}}, "admin"),
        ("POST", "/api/users", {"json": {"name": "newbie", "role": "viewer"}}, "admin"),
        ("PATCH", "/api/users/viewer", {"json": {"role": "operator"}}, "admin"),
        ("POST", "/api/users/viewer/token", {}, "admin"),
        ("POST", "/api/users/viewer/password", {"json": {"password": "a new secret"}}, "admin"),
        ("POST", f"{c}/abort", {}, "admin"),
        ("DELETE", "/api/users/operator", {}, "admin"),
    ]


def _counts(dash: Dashboard) -> tuple[int, int, int]:
    with transaction(dash.factory) as s:
        return (
            s.scalar(select(func.count()).select_from(CommandRow)) or 0,
            s.scalar(select(func.count()).select_from(EventRow)) or 0,
            s.scalar(select(func.count()).select_from(UserRow)) or 0,
        )


@pytest.mark.parametrize("role", [None, "viewer", "operator", "admin"])
def test_every_endpoint_for_every_role(
    dash: Dashboard, role: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    headers = bearer(dash.tokens[role]) if role else {}
    for method, path, kwargs, least in endpoints(dash.store):
        before = _counts(dash)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="controller.api.auth"):
            res = dash.client.request(method, path, headers=headers, **kwargs)
        where = f"{role} {method} {path}: {res.status_code} {res.text[:200]}"
        if role is None:
            assert res.status_code == 401, where
        elif not Role(role).allows(Role(least)):
            assert res.status_code == 403, where
        else:
            assert res.status_code not in (401, 403), where
            assert res.status_code < 500, where
            continue
        assert _counts(dash) == before, f"a refused request changed the store: {where}"
        assert any("refused" in r.getMessage() for r in caplog.records), where
        assert all(dash.tokens.get(r, "?") not in caplog.text for r in dash.tokens)


def test_specific_refusals(dash: Dashboard) -> None:
    c = f"/api/campaigns/{dash.store.campaign_id}"
    viewer, operator = bearer(dash.tokens["viewer"]), bearer(dash.tokens["operator"])
    assert dash.client.post(f"{c}/abort", headers=viewer).status_code == 403
    assert dash.client.post(f"{c}/abort", headers=operator).status_code == 403
    new = {"name": "mallory", "role": "admin"}
    assert dash.client.post("/api/users", json=new, headers=operator).status_code == 403
    assert dash.client.get("/api/campaigns").status_code == 401
    res = dash.client.get("/api/campaigns", headers={"Authorization": "Basic abc"})
    assert res.status_code == 401
    forged = dash.tokens["admin"][:-4] + "AAAA"
    assert dash.client.get("/api/campaigns", headers=bearer(forged)).status_code == 401


def test_health_and_login_page_need_no_authentication(dash: Dashboard) -> None:
    assert dash.client.get("/health").json() == {"status": "ok"}
    res = dash.client.get("/login")
    assert res.status_code == 200
    assert 'name="csrf_token"' in res.text


def test_pages_redirect_to_login_when_anonymous(dash: Dashboard) -> None:
    pages = ("/", "/campaigns", "/instruments", "/alarms", "/approvals", "/users", "/tasks")
    for path in (*pages, f"/campaigns/{dash.store.campaign_id}", "/docs"):
        res = dash.client.get(path, follow_redirects=False)
        assert res.status_code == 303
        assert res.headers["location"].startswith("/login?next=")


def _login(dash: Dashboard, name: str, secret: str) -> Any:
    form = dash.client.get("/login").text
    m = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert m is not None
    return dash.client.post(
        "/login",
        data={"name": name, "secret": secret, "csrf_token": m.group(1), "next": "/"},
        follow_redirects=False,
    )


def test_login_form_opens_a_session_and_csrf_guards_changes(dash: Dashboard) -> None:
    res = _login(dash, "operator", "operator-password")
    assert res.status_code == 303
    assert "httponly" in res.headers["set-cookie"].lower()
    assert "samesite=strict" in res.headers["set-cookie"].lower()
    page = dash.client.get(f"/campaigns/{dash.store.campaign_id}")
    assert page.status_code == 200
    assert "/static/plotly.min.js" in page.text
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert csrf is not None
    pause = f"/api/campaigns/{dash.store.campaign_id}/pause"
    assert dash.client.post(pause).status_code == 403  # the cookie alone is not enough
    assert dash.client.post(pause, headers={"X-CSRF-Token": "wrong"}).status_code == 403
    res = dash.client.post(pause, headers={"X-CSRF-Token": csrf.group(1)})
    assert res.status_code == 202
    assert dash.client.get("/static/plotly.min.js").status_code == 200
    assert 'id="attention-section"' in dash.client.get("/").text  # the lab overview
    index = dash.client.get("/campaigns")
    assert index.status_code == 200
    assert 'id="campaigns"' in index.text
    assert 'id="upload-form"' not in index.text  # operators do not create campaigns
    assert 'id="btn-pause"' in page.text
    assert 'id="btn-abort"' not in page.text
    docs = dash.client.get("/docs")
    assert docs.status_code == 200
    assert "/static/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    assert dash.client.get("/static/swagger-ui-bundle.js").status_code == 200
    assert dash.client.get("/static/nope.js").status_code == 404
    out = dash.client.post("/logout", data={"csrf_token": csrf.group(1)}, follow_redirects=False)
    assert out.status_code == 303
    dash.client.cookies.clear()
    assert dash.client.get("/api/campaigns").status_code == 401


def test_login_accepts_a_token_and_refuses_wrong_secrets(dash: Dashboard) -> None:
    assert _login(dash, "viewer", dash.tokens["viewer"]).status_code == 303
    dash.client.cookies.clear()
    assert _login(dash, "viewer", dash.tokens["admin"]).status_code == 401
    assert _login(dash, "viewer", "nope").status_code == 401
    assert _login(dash, "nobody", "nope").status_code == 401
    res = dash.client.post(
        "/login", data={"name": "viewer", "secret": "viewer-password", "csrf_token": "forged"}
    )
    assert res.status_code == 403


def test_login_redirect_stays_on_this_site(dash: Dashboard) -> None:
    form = dash.client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    res = dash.client.post(
        "/login",
        data={
            "name": "viewer",
            "secret": "viewer-password",
            "csrf_token": token.group(1),
            "next": "//evil.example/x",
        },
        follow_redirects=False,
    )
    assert res.headers["location"] == "/"


def test_secrets_are_stored_hashed(dash: Dashboard) -> None:
    from models.tables import ApiTokenRow

    with transaction(dash.factory) as s:
        for row in s.scalars(select(ApiTokenRow)):
            assert row.token_hash.startswith("pbkdf2_sha256$")
            assert all(t not in row.token_hash for t in dash.tokens.values())
        user = s.scalars(select(UserRow).where(UserRow.name == "admin")).one()
        assert user.password_hash is not None
        assert "admin-password" not in user.password_hash
        assert user_for_token(s, dash.tokens["admin"]) is not None
        assert check_login(s, "admin", "admin-password") is not None
        assert check_login(s, "admin", "Admin-password") is None


def test_hash_and_verify() -> None:
    h = hash_secret("s3cret", 1000)
    assert verify_secret("s3cret", h)
    assert not verify_secret("s3cret!", h)
    assert not verify_secret("s3cret", "garbage")
    assert hash_secret("s3cret", 1000) != h  # salted


def test_disabled_user_is_locked_out(dash: Dashboard) -> None:
    admin = bearer(dash.tokens["admin"])
    assert dash.client.delete("/api/users/viewer", headers=admin).status_code == 200
    assert (
        dash.client.get("/api/campaigns", headers=bearer(dash.tokens["viewer"])).status_code == 401
    )
    assert dash.client.delete("/api/users/admin", headers=admin).status_code == 409
