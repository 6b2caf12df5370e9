"""What the dashboard's JSON API answers and records, endpoint by endpoint."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from controller.api.app import create_app
from controller.api.charts import best_so_far, pareto_front
from controller.api.users import get_user
from controller.store import (
    add_event,
    alembic_config,
    finish_command,
    make_engine,
    migrate,
    set_campaign_status,
    transaction,
)
from controller.store.lease import LeaseHolder, acquire_lease
from models.status import CampaignStatus, CommandStatus
from models.tables import CampaignRow, CommandRow, ControllerLeaseRow, EventRow, utcnow
from tests.controller.api_store import (
    RecordingLauncher,
    bearer,
    dash_settings,
    make_users,
    populate,
)
from tests.controller.conftest import Dashboard
from tests.controller.test_api_auth import CAMPAIGN_TOML


def _get(dash: Dashboard, path: str, role: str = "viewer") -> Any:
    res = dash.client.get(path, headers=bearer(dash.tokens[role]))
    assert res.status_code == 200, res.text
    return res.json()


def _post(dash: Dashboard, path: str, role: str = "admin", **kwargs: Any) -> Any:
    return dash.client.post(path, headers=bearer(dash.tokens[role]), **kwargs)


def test_campaign_list_and_detail(dash: Dashboard) -> None:
    [c] = _get(dash, "/api/campaigns")
    assert c["name"] == "approval"
    assert c["status"] == "RUNNING"
    assert c["completed"] == 3
    assert c["counts"]["PROPOSED"] == 1
    assert c["require_approval"] is True
    detail = _get(dash, f"/api/campaigns/{c['id']}")
    assert detail["spec"]["planner"]["name"] == "random"
    assert detail["instruments"][0]["name"] == "station-1"
    summary = detail["last_decision"]["summary"]
    assert "random planner" in summary
    assert "5 new points" in summary
    assert "expected no particular outcome" in summary
    tm = detail["timing"]  # where the time went: each step took 5 s, the decision 0.01 s
    assert tm["instrument_s_per_experiment"] == pytest.approx(5.0)
    assert tm["planning_s_per_decision"] == pytest.approx(0.01)
    assert (tm["decisions"], tm["finished"]) == (1, 3)
    assert tm["wall_s_per_experiment"] is not None
    assert "5 s instrument" in tm["text"]
    assert (
        dash.client.get("/api/campaigns/999", headers=bearer(dash.tokens["viewer"])).status_code
        == 404
    )


def test_charts(dash: Dashboard) -> None:
    d = _get(dash, f"/api/campaigns/{dash.store.campaign_id}/charts")
    assert d["best_so_far"]["y"]["values"] == [1.0, 2.0, 0.5]
    assert d["best_so_far"]["y"]["best"] == [1.0, 2.0, 2.0]
    assert d["best_so_far"]["cost"]["best"] == [3.0, 2.0, 1.0]
    # (y=2, cost=2) and (y=0.5, cost=1) are non-dominated; (y=1, cost=3) is beaten by both
    assert sorted(d["pareto"]["front"]) == sorted(dash.store.completed[1:])
    assert d["phase_map"] is None
    bars = d["timeline"]["bars"]
    assert [b["instrument"] for b in bars] == ["station-1"] * 3
    # three 5 s steps over 25 s: busy 15 of 25 s
    assert abs(d["timeline"]["busy_fraction"]["station-1"] - 0.6) < 1e-6


def test_pareto_front_and_best_so_far() -> None:
    pts = [(1.0, 1.0), (2.0, 0.5), (0.5, 2.0), (0.4, 0.4), (2.0, 0.5)]
    assert pareto_front(pts, (1.0, 1.0)) == [2, 0, 1, 4]
    assert pareto_front(pts, (-1.0, -1.0)) == [3]
    assert best_so_far([None, 3.0, 1.0, 4.0], -1.0) == [None, 3.0, 1.0, 1.0]


def test_experiments_filter_and_paginate(dash: Dashboard) -> None:
    base = f"/api/campaigns/{dash.store.campaign_id}/experiments"
    page = _get(dash, f"{base}?limit=2")
    assert page["total"] == 5
    assert len(page["items"]) == 2
    assert page["items"][0]["id"] > page["items"][1]["id"]  # newest first
    rest = _get(dash, f"{base}?limit=2&offset=4")
    assert len(rest["items"]) == 1
    done = _get(dash, f"{base}?status=COMPLETED&order=asc")
    assert [e["id"] for e in done["items"]] == dash.store.completed
    two = _get(dash, f"{base}?status=PROPOSED&status=INTERRUPTED")
    assert two["total"] == 2
    bad = dash.client.get(f"{base}?status=BOGUS", headers=bearer(dash.tokens["viewer"]))
    assert bad.status_code == 422


def test_experiment_detail_has_steps_measurements_and_decision(dash: Dashboard) -> None:
    e = _get(dash, f"/api/experiments/{dash.store.completed[1]}")
    assert e["status"] == "COMPLETED"
    assert [st["status"] for st in e["steps"]] == ["COMPLETED"]
    assert e["steps"][0]["instrument"] == "station-1"
    assert {m["name"]: m["value"] for m in e["measurements"]} == {"y": 2.0, "cost": 2.0}
    assert e["decision"]["id"] == dash.store.decision_id
    assert "random planner" in e["decision"]["summary"]


def test_controls_queue_commands_with_who_asked(dash: Dashboard) -> None:
    c = f"/api/campaigns/{dash.store.campaign_id}"
    res = _post(dash, f"{c}/pause", role="operator")
    assert res.status_code == 202
    body = res.json()
    assert body["status"] == "PENDING"
    cmd = _get(dash, body["url"])
    assert cmd["command"] == "pause"
    assert cmd["actor"] == "user:operator"
    with transaction(dash.factory) as s:
        ev = s.scalars(select(EventRow).where(EventRow.kind == "command.requested")).one()
        assert ev.actor == "user:operator"
        assert ev.data["command_id"] == body["command_id"]
        row = s.get(CommandRow, body["command_id"])
        assert row is not None
        finish_command(s, row, applied=False, result="not running here")
    cmd = _get(dash, body["url"])
    assert cmd["status"] == CommandStatus.REFUSED.value
    assert cmd["result"] == "not running here"
    assert _post(dash, f"{c}/resume", role="operator").status_code == 409  # RUNNING
    res = _post(dash, f"{c}/abort")
    assert res.status_code == 202
    assert _get(dash, res.json()["url"])["command"] == "abort"
    assert (
        dash.client.get("/api/commands/999", headers=bearer(dash.tokens["viewer"])).status_code
        == 404
    )


def test_approve_reject_and_resolve(dash: Dashboard) -> None:
    c = f"/api/campaigns/{dash.store.campaign_id}"
    p = dash.store
    res = _post(dash, f"{c}/approve", role="operator", json={"experiments": [p.proposed]})
    assert res.status_code == 202
    assert _get(dash, res.json()["url"])["args"] == {"experiments": [p.proposed]}
    res = _post(
        dash, f"{c}/reject", role="operator", json={"experiments": [p.proposed], "reason": "hot"}
    )
    assert _get(dash, res.json()["url"])["args"]["reason"] == "hot"
    late = _post(dash, f"{c}/approve", role="operator", json={"experiments": [p.completed[0]]})
    assert late.status_code == 409
    missing = _post(dash, f"{c}/approve", role="operator", json={"experiments": [9999]})
    assert missing.status_code == 404
    assert _post(dash, f"{c}/approve", role="operator", json={"experiments": []}).status_code == 422
    res = _post(
        dash,
        f"{c}/experiments/{p.interrupted}/resolve",
        role="operator",
        json={"action": "fail"},
    )
    assert _get(dash, res.json()["url"])["args"] == {"experiment": p.interrupted, "action": "fail"}
    not_interrupted = _post(
        dash,
        f"{c}/experiments/{p.completed[0]}/resolve",
        role="operator",
        json={"action": "fail"},
    )
    assert not_interrupted.status_code == 409


def test_instruments_health_and_service(dash: Dashboard) -> None:
    c = f"/api/campaigns/{dash.store.campaign_id}"
    [inst] = _get(dash, f"{c}/instruments")
    assert inst["state"] == "IDLE"
    assert inst["in_service"] is True
    assert inst["quiet"] is False
    assert inst["last_seen_at"] is not None
    res = _post(dash, f"{c}/instruments/station-1/out", role="operator", json={"reason": "clean"})
    assert _get(dash, res.json()["url"])["args"] == {"instrument": "station-1", "reason": "clean"}
    res = _post(dash, f"{c}/instruments/station-1/in", role="operator")
    assert _get(dash, res.json()["url"])["command"] == "instrument_in"
    assert _post(dash, f"{c}/instruments/oven/out", role="operator").status_code == 404


def test_event_log(dash: Dashboard) -> None:
    all_events = _get(dash, "/api/events?limit=500")
    assert any(e["kind"] == "campaign.running" for e in all_events)
    ids = [e["id"] for e in all_events]
    assert ids == sorted(ids, reverse=True)  # newest first
    last = all_events[0]["id"]
    _post(dash, f"/api/campaigns/{dash.store.campaign_id}/pause", role="operator")
    new = _get(dash, f"/api/events?since_id={last}&campaign_id={dash.store.campaign_id}")
    assert [e["kind"] for e in new] == ["command.requested"]
    assert new[0]["actor"] == "user:operator"


def test_event_log_pages_newest_first_by_cursor(dash: Dashboard) -> None:
    cid = dash.store.campaign_id
    with transaction(dash.factory) as s:
        for i in range(25):
            add_event(s, "note.test", f"note {i}", campaign_id=cid, instrument="station-1")
    first = _get(dash, f"/api/events?campaign_id={cid}&kind=note.&limit=10")
    assert [e["message"] for e in first] == [f"note {i}" for i in range(24, 14, -1)]
    second = _get(
        dash, f"/api/events?campaign_id={cid}&kind=note.&limit=10&before_id={first[-1]['id']}"
    )
    assert [e["message"] for e in second] == [f"note {i}" for i in range(14, 4, -1)]
    third = _get(
        dash, f"/api/events?campaign_id={cid}&kind=note&limit=10&before_id={second[-1]['id']}"
    )
    assert [e["message"] for e in third] == [f"note {i}" for i in range(4, -1, -1)]
    by_instrument = _get(dash, "/api/events?instrument=station-1&limit=500")
    assert {e["kind"] for e in by_instrument} == {"note.test"}


def test_create_from_upload_then_start(dash: Dashboard) -> None:
    res = _post(
        dash, "/api/campaigns", files={"file": ("c.toml", CAMPAIGN_TOML)}, data={"budget": "2"}
    )
    assert res.status_code == 201, res.text
    created = res.json()
    assert created["status"] == "CREATED"
    assert created["budget"] == 2
    assert (dash.settings.campaigns_dir / "uploaded.toml").read_bytes() == CAMPAIGN_TOML
    again = _post(dash, "/api/campaigns", files={"file": ("c.toml", CAMPAIGN_TOML)})
    assert again.status_code == 409
    start = _post(dash, f"/api/campaigns/{created['id']}/start")
    assert start.status_code == 202
    assert dash.launcher.started == ["uploaded"]
    with transaction(dash.factory) as s:
        ev = s.scalars(select(EventRow).where(EventRow.kind == "campaign.start_requested")).one()
        assert ev.actor == "user:admin"
    # a campaign that was not uploaded here cannot be started from here
    res = _post(dash, f"/api/campaigns/{dash.store.campaign_id}/start")
    assert res.status_code == 409


def test_a_campaign_whose_controller_died_can_be_started_again_but_not_a_live_one(
    dash: Dashboard,
) -> None:
    created = _post(dash, "/api/campaigns", files={"file": ("c.toml", CAMPAIGN_TOML)}).json()
    cid = created["id"]
    me = LeaseHolder.this_process()  # a live process: its lease protects the campaign
    with transaction(dash.factory) as s:
        row = s.get_one(CampaignRow, cid)
        set_campaign_status(s, row, CampaignStatus.RUNNING, actor="cli")
        acquire_lease(s, cid, me, ttl_s=600)
    detail = _get(dash, f"/api/campaigns/{cid}")
    assert detail["controller"]["live"] is True
    assert detail["controller"]["pid"] == me.pid
    res = _post(dash, f"/api/campaigns/{cid}/start")
    assert res.status_code == 409
    assert f"process {me.pid}" in res.json()["detail"]
    assert dash.launcher.started == []
    with transaction(dash.factory) as s:  # the controller stopped renewing: it crashed
        s.execute(update(ControllerLeaseRow).values(expires_at=utcnow() - timedelta(seconds=1)))
    detail = _get(dash, f"/api/campaigns/{cid}")
    assert detail["controller"]["live"] is False
    res = _post(dash, f"/api/campaigns/{cid}/start")
    assert res.status_code == 202, res.text
    assert dash.launcher.started == ["uploaded"]


def test_invalid_upload_names_the_key_and_records_nothing(dash: Dashboard) -> None:
    bad = CAMPAIGN_TOML.replace(b'direction = "maximize"', b'direction = "up"')
    res = _post(dash, "/api/campaigns", files={"file": ("bad.toml", bad)})
    assert res.status_code == 422
    problems = res.json()["detail"]["problems"]
    assert problems == [
        {"key": "objectives[0].direction", "message": "expected 'maximize' or 'minimize'"}
    ]
    planner = CAMPAIGN_TOML.replace(b'name = "random"', b'name = "nope"')
    res = _post(dash, "/api/campaigns", files={"file": ("bad.toml", planner)})
    assert res.status_code == 422
    assert res.json()["detail"]["problems"][0]["key"] == "planner.name"
    res = _post(dash, "/api/campaigns", files={"file": ("bad.toml", b"[campaign")})
    assert "invalid TOML" in res.json()["detail"]["message"]
    with transaction(dash.factory) as s:
        assert s.scalars(select(CampaignRow.name)).all() == ["approval"]


def test_abort_of_a_campaign_that_never_started_is_immediate(dash: Dashboard) -> None:
    created = _post(dash, "/api/campaigns", files={"file": ("c.toml", CAMPAIGN_TOML)}).json()
    res = _post(dash, f"/api/campaigns/{created['id']}/abort")
    assert res.status_code == 200
    assert res.json()["status"] == "ABORTED"
    assert _post(dash, f"/api/campaigns/{created['id']}/abort").status_code == 409


def test_users_are_managed_by_admins(dash: Dashboard) -> None:
    res = _post(dash, "/api/users", json={"name": "carol", "role": "operator"})
    assert res.status_code == 201
    token = res.json()["token"]
    assert dash.client.get("/api/campaigns", headers=bearer(token)).status_code == 200
    names = [u["name"] for u in _get(dash, "/api/users", role="admin")]
    assert "carol" in names
    assert all("token" not in u for u in _get(dash, "/api/users", role="admin"))
    assert _post(dash, "/api/users", json={"name": "carol", "role": "viewer"}).status_code == 409
    assert _post(dash, "/api/users", json={"name": "1bad", "role": "viewer"}).status_code == 422
    assert _post(dash, "/api/users", json={"name": "dave", "role": "root"}).status_code == 422


def test_reads_and_controls_on_each_database(db_url: str, tmp_path: Path) -> None:
    cfg = dash_settings(tmp_path, db_url=db_url)
    app = create_app(cfg, launcher=RecordingLauncher(cfg))
    tokens = make_users(app.state.factory, cfg.kdf_iterations)
    store = populate(app.state.factory)
    h = bearer(tokens["operator"])
    c = f"/api/campaigns/{store.campaign_id}"
    with TestClient(app) as client:
        assert client.get(f"{c}/experiments?status=COMPLETED", headers=h).json()["total"] == 3
        charts = client.get(f"{c}/charts", headers=h).json()
        assert charts["best_so_far"]["y"]["best"] == [1.0, 2.0, 2.0]
        detail = client.get(f"/api/experiments/{store.completed[0]}", headers=h).json()
        assert len(detail["measurements"]) == 2
        res = client.post(f"{c}/approve", headers=h, json={"experiments": [store.proposed]})
        assert res.status_code == 202
        assert client.get(res.json()["url"], headers=h).json()["args"] == {
            "experiments": [store.proposed]
        }
    app.state.engine.dispose()


def test_users_migration_goes_down_and_up(db_url: str) -> None:
    from alembic import command
    from sqlalchemy import inspect

    engine = make_engine(db_url)
    migrate(engine)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    assert "users" not in inspect(engine).get_table_names()
    migrate(engine)
    assert {"users", "api_tokens", "web_sessions"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_samples_and_waiting_reasons_are_served_to_viewers(dash: Dashboard) -> None:
    from controller.store.samples import move_sample, set_waiting

    cid = dash.store.campaign_id
    first = dash.store.completed[0]
    with transaction(dash.factory) as s:
        move_sample(s, cid, first, to="station-1", step=0, action="measure", label="crucible-2",
                    container="crucible")  # fmt: skip
        set_waiting(s, {dash.store.proposed: "operator approval"})
    res = dash.client.get(f"/api/campaigns/{cid}/samples")
    assert res.status_code == 401  # no token, no samples
    (sample,) = _get(dash, f"/api/campaigns/{cid}/samples")
    assert sample["experiment_id"] == first
    assert (sample["label"], sample["container"]) == ("crucible-2", "crucible")
    assert (sample["location"], sample["state"]) == ("station-1", "IN_PROCESS")
    assert (
        dash.client.get(
            "/api/campaigns/999/samples", headers=bearer(dash.tokens["viewer"])
        ).status_code
        == 404
    )
    items = _get(dash, f"/api/campaigns/{cid}/experiments?limit=50")["items"]
    waiting = {e["id"]: e["waiting_for"] for e in items}
    assert waiting[dash.store.proposed] == "operator approval"
    assert waiting[first] is None


def test_a_change_is_committed_before_its_answer_leaves(tmp_path: Path) -> None:
    """A client told 201 or 202 finds what it made at once: the store is read, from another
    connection, at the moment the answer's first bytes are sent."""
    settings = dash_settings(tmp_path)
    app = create_app(settings, launcher=RecordingLauncher(settings))
    factory = app.state.factory
    tokens = make_users(factory, settings.kdf_iterations)
    cid = populate(factory).campaign_id
    seen: dict[str, bool] = {}

    def stored(path: str) -> bool:
        with transaction(factory, read_only=True) as s:
            if path == "/api/users":
                return get_user(s, "grace") is not None
            return (
                s.scalars(select(CommandRow).where(CommandRow.command == "pause")).first()
                is not None
            )

    async def spying(scope: Any, receive: Any, send: Any) -> None:
        async def spy(message: Any) -> None:
            if message["type"] == "http.response.start" and scope["method"] == "POST":
                seen[scope["path"]] = stored(scope["path"])
            await send(message)

        await app(scope, receive, spy)

    with TestClient(spying) as client:
        admin = bearer(tokens["admin"])
        res = client.post("/api/users", json={"name": "grace", "role": "operator"}, headers=admin)
        assert res.status_code == 201, res.text
        res = client.post(f"/api/campaigns/{cid}/pause", headers=bearer(tokens["operator"]))
        assert res.status_code == 202, res.text
    assert seen == {"/api/users": True, f"/api/campaigns/{cid}/pause": True}
