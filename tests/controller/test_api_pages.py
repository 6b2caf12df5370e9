"""The lab's pages (overview, instruments, alarms, approvals, users) and user management."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from controller.api.pages import when
from controller.store import add_event, transaction
from controller.store.lab import apply_lab, set_instrument_state
from models.lab import LabSpec
from models.status import LabInstrumentState
from models.tables import EventRow
from tests.controller.api_store import bearer
from tests.controller.conftest import Dashboard
from tests.controller.test_api_health import _busy, _lease


def _page(dash: Dashboard, path: str, role: str = "viewer") -> str:
    res = dash.client.get(path, headers=bearer(dash.tokens[role]))
    assert res.status_code == 200, f"{path}: {res.status_code} {res.text[:300]}"
    return res.text


def _text(html: str, element_id: str) -> str:
    """The text of the element with that id (tags removed, spaces collapsed)."""
    m = re.search(rf'id="{element_id}"[^>]*>(.*?)</(table|ol|p|section)>', html, re.S)
    assert m is not None, f"no #{element_id}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", m.group(1))).strip()


def _api(dash: Dashboard, method: str, path: str, role: str = "admin", **kw: Any) -> Any:
    return dash.client.request(method, path, headers=bearer(dash.tokens[role]), **kw)


def test_times_have_one_format_and_show_their_zone() -> None:
    assert when("2026-03-02T14:05:09.123+00:00") == "2026-03-02 14:05:09 UTC"
    assert when("2026-03-02T15:05:09+01:00") == "2026-03-02 14:05:09 UTC"
    assert when(None) == ""


def test_the_overview_is_the_landing_page_and_puts_a_lost_controller_first(
    dash: Dashboard,
) -> None:
    cid = dash.store.campaign_id
    _lease(dash, expired=True)
    with transaction(dash.factory) as s:
        add_event(s, "alarm.instrument_quarantined", "station-1 quarantined", campaign_id=cid)
    html = _page(dash, "/")
    attention = re.findall(r'data-what="([a-z_]+)"', html)
    assert attention == ["controller_lost", "alarms", "approval"]
    row = _text(html, "overview-campaigns")
    assert "CONTROLLER LOST" in row
    assert 'class="status LOST"' in html  # red
    assert "3 / 10" in row  # progress
    assert "y 2.0 (maximize), experiment" in row
    assert "x1=0.1, x2=0.5" in row
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", row)  # last activity, zone shown
    assert f'href="/approvals?campaign_id={cid}">1<' in html  # awaiting approval


def test_the_campaign_list_moved_to_campaigns(dash: Dashboard) -> None:
    html = _page(dash, "/campaigns", role="admin")
    assert 'id="campaigns"' in html
    assert 'id="upload-form"' in html
    assert 'id="upload-form"' not in _page(dash, "/campaigns", role="operator")


def test_the_instruments_page_shows_a_hung_instrument_as_overdue(dash: Dashboard) -> None:
    _lease(dash, expired=False)
    _busy(dash, since_s=3600)  # its finished steps took 5 s: expected 15 s
    html = _page(dash, "/instruments", role="operator")
    table = _text(html, "instruments")
    assert "OVERDUE by" in table
    assert f"experiment {dash.store.proposed}: measure" in table  # what it runs
    assert "approval" in table  # for which campaign
    assert "0 / 0" in table  # fault total / in a row
    assert 'class="oos-reason"' in html  # the operator types the reason
    assert 'id="no-lab"' in html
    assert 'class="oos-reason"' not in _page(dash, "/instruments", role="viewer")


def test_the_instruments_page_lists_the_lab_files_instruments(dash: Dashboard) -> None:
    spec = LabSpec.model_validate(
        {
            "lab": {"name": "north"},
            "instruments": [
                {"name": "furnace-1", "kind": "furnace", "address": "tcp://127.0.0.1:5701"},
                {"name": "xrd-1", "kind": "xrd", "address": "tcp://127.0.0.1:5702"},
            ],
        }
    )
    with transaction(dash.factory) as s:
        lab, _ = apply_lab(s, spec)
        set_instrument_state(
            s, lab.id, "xrd-1", LabInstrumentState.OUT_OF_SERVICE, reason="tube replaced"
        )
    table = _text(_page(dash, "/instruments"), "lab-instruments")
    assert "furnace-1" in table
    assert "IN_SERVICE" in table
    assert "OUT_OF_SERVICE" in table
    assert "tube replaced" in table
    [furnace, xrd] = _api(dash, "GET", "/api/lab-instruments", role="viewer").json()
    assert (furnace["name"], furnace["held_by"], xrd["reason"]) == (
        "furnace-1",
        None,
        "tube replaced",
    )


def test_the_alarms_page_filters_and_acknowledges(dash: Dashboard) -> None:
    cid = dash.store.campaign_id
    with transaction(dash.factory) as s:
        a1 = add_event(s, "alarm.instrument_quarantined", "station-1 quarantined", campaign_id=cid)
        a2 = add_event(s, "alarm.login_failures", "repeated failed logins")
        s.flush()
        ids = (a1.id, a2.id)
    html = _page(dash, "/alarms", role="operator")
    assert re.findall(r'class="alarm-row" data-id="(\d+)"', html) == [str(ids[1]), str(ids[0])]
    assert html.count('class="btn-ack"') == 2
    assert 'class="btn-ack"' not in _page(dash, "/alarms")  # viewers do not acknowledge
    only = _page(dash, f"/alarms?campaign_id={cid}")
    assert re.findall(r'class="alarm-row" data-id="(\d+)"', only) == [str(ids[0])]
    res = _api(dash, "POST", f"/api/alarms/{ids[0]}/ack", role="operator", json={"note": "ok"})
    assert res.status_code == 200
    assert re.findall(r'class="alarm-row" data-id="(\d+)"', _page(dash, "/alarms")) == [str(ids[1])]
    acked = _text(_page(dash, "/alarms?show=all"), "alarms")
    assert re.search(r"by operator at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC: ok", acked)
    events = _page(dash, "/alarms?show=all&kind=ack.")
    assert re.findall(r'class="event-row" data-id="(\d+)"', events) != []
    assert "operator acknowledged alarm" in _text(events, "events")


def test_the_alarms_page_pages_the_log_back(dash: Dashboard) -> None:
    with transaction(dash.factory) as s:
        for i in range(120):
            add_event(s, "note.test", f"entry {i}")
    first = _page(dash, "/alarms?kind=note.")
    rows = re.findall(r'class="event-row" data-id="(\d+)"', first)
    assert len(rows) == 100
    m = re.search(r'id="events-older" href="([^"]+)"', first)
    assert m is not None
    second = _page(dash, m.group(1).replace("&amp;", "&"))
    older = re.findall(r'class="event-row" data-id="(\d+)"', second)
    assert len(older) == 20
    assert int(older[0]) < int(rows[-1])
    with transaction(dash.factory) as s:
        assert s.get(EventRow, int(older[-1])) is not None


def test_the_approvals_page_says_why_and_offers_bulk_decisions(dash: Dashboard) -> None:
    html = _page(dash, "/approvals", role="operator")
    table = _text(html, "approvals")
    assert str(dash.store.proposed) in table
    assert "random v1" in table
    assert "random planner" in table
    assert 'id="btn-approve-selected"' in html
    assert 'id="reject-reason"' in html
    assert 'id="btn-approve-selected"' not in _page(dash, "/approvals")
    assert 'id="no-approvals"' in _page(dash, "/approvals?campaign_id=999")


def test_users_page_is_for_admins(dash: Dashboard) -> None:
    res = dash.client.get("/users", headers=bearer(dash.tokens["operator"]))
    assert res.status_code == 403
    html = _page(dash, "/users", role="admin")
    assert re.findall(r'class="user-row" data-name="([^"]+)"', html) == [
        "admin",
        "operator",
        "viewer",
    ]
    assert 'id="user-form"' in html


def test_admins_change_roles_disable_enable_rotate_tokens_and_set_passwords(
    dash: Dashboard,
) -> None:
    op = dash.tokens["operator"]
    res = _api(dash, "PATCH", "/api/users/operator", json={"role": "viewer"})
    assert (res.status_code, res.json()["role"]) == (200, "viewer")
    pause = f"/api/campaigns/{dash.store.campaign_id}/pause"
    assert dash.client.post(pause, headers=bearer(op)).status_code == 403  # a viewer now

    assert _api(dash, "PATCH", "/api/users/operator", json={"disabled": True}).json()["disabled"]
    assert dash.client.get("/api/campaigns", headers=bearer(op)).status_code == 401
    assert not _api(dash, "PATCH", "/api/users/operator", json={"disabled": False}).json()[
        "disabled"
    ]
    assert dash.client.get("/api/campaigns", headers=bearer(op)).status_code == 401  # revoked

    res = _api(dash, "POST", "/api/users/operator/token")
    assert res.status_code == 200
    fresh = res.json()["token"]
    assert dash.client.get("/api/campaigns", headers=bearer(fresh)).status_code == 200
    again = _api(dash, "POST", "/api/users/operator/token").json()["token"]
    assert dash.client.get("/api/campaigns", headers=bearer(fresh)).status_code == 401
    assert dash.client.get("/api/campaigns", headers=bearer(again)).status_code == 200

    short = _api(dash, "POST", "/api/users/operator/password", json={"password": "short"})
    assert short.status_code == 422
    assert "at least 10" in short.json()["detail"]
    ok = _api(dash, "POST", "/api/users/operator/password", json={"password": "a new secret"})
    assert (ok.status_code, ok.json()["has_password"]) == (200, True)
    with transaction(dash.factory) as s:
        kinds = [e.kind for e in s.query(EventRow).filter(EventRow.kind.like("user.%"))]
    assert kinds[-6:] == [
        "user.role_changed",
        "user.disabled",
        "user.enabled",
        "user.token_rotated",
        "user.token_rotated",
        "user.password_changed",
    ]


def test_an_admin_cannot_lock_themselves_out_and_unknown_users_are_404(dash: Dashboard) -> None:
    assert _api(dash, "PATCH", "/api/users/admin", json={"role": "viewer"}).status_code == 409
    assert _api(dash, "PATCH", "/api/users/admin", json={"disabled": True}).status_code == 409
    assert _api(dash, "DELETE", "/api/users/admin").status_code == 409
    assert _api(dash, "PATCH", "/api/users/nobody", json={"role": "viewer"}).status_code == 404
    assert _api(dash, "POST", "/api/users/nobody/token").status_code == 404
    for method, path, body in [
        ("PATCH", "/api/users/viewer", {"role": "admin"}),
        ("POST", "/api/users/viewer/token", None),
        ("POST", "/api/users/viewer/password", {"password": "a new secret"}),
    ]:
        assert _api(dash, method, path, role="operator", json=body).status_code == 403


def test_overview_counts_tasks_waiting_for_a_person(dash: Dashboard) -> None:
    from controller.store.tasks import open_task

    with transaction(dash.factory) as s:
        open_task(
            s,
            "req-1",
            instrument="bench",
            action="weigh",
            instructions="Weigh it.",
            parameters={},
            outputs=[],
            timeout_s=timedelta(hours=1).total_seconds(),
        )
    ov = _api(dash, "GET", "/api/overview", role="viewer").json()
    assert ov["open_tasks"] == 1
    assert next(a for a in ov["attention"] if a["what"] == "tasks")["text"].startswith("1 task")
    assert 'href="/tasks">1 task(s) wait for a person' in _page(dash, "/")


def test_the_approvals_page_shows_acquisition_value_and_prediction(dash: Dashboard) -> None:
    from controller.store import add_decision, add_experiment
    from models.records import Decision, Proposal

    cid = dash.store.campaign_id
    with transaction(dash.factory) as s:
        d = add_decision(
            s,
            cid,
            Decision(
                proposals=[Proposal({"x1": 0.3, "x2": 0.4}), Proposal({"x1": 0.6, "x2": 0.1})],
                planner="qlognei",
                version="2",
                seed=1,
                n_train=3,
                candidate_scores=[-1.25, -2.5],
                details={
                    "phase": "bayesopt",
                    "acquisition": "qLogNEI",
                    "predicted_mean": [2.5, 1.75],
                    "predicted_std": [0.125, 0.5],
                },
            ),
        )
        second = add_experiment(s, cid, {"x1": 0.6, "x2": 0.1}, decision_id=d.id, proposal_index=1)
        s.flush()
        eid = second.id
    html = _page(dash, "/approvals")
    row = re.search(rf'data-id="{eid}".*?</tr>', html, re.S)
    assert row is not None
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row.group(0)))
    assert "qlognei v2" in text
    assert "-2.5 (qLogNEI)" in text  # the second proposal's acquisition value
    assert "predicted_mean: 1.75" in text
    assert "predicted_std: 0.5" in text
