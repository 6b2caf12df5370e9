"""CONTROLLER LOST and OVERDUE: what the dashboard derives from leases and running steps."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import update

from controller.api.health import duration_words
from controller.store import add_step, set_experiment_status, set_step_status, transaction
from controller.store import upsert_instrument as upsert
from controller.store.lease import LeaseHolder, acquire_lease, lease_of
from models.status import ExperimentStatus, InstrumentState, StepStatus
from models.tables import ControllerLeaseRow, ExperimentRow, utcnow
from tests.controller.api_store import bearer
from tests.controller.conftest import Dashboard


def _get(dash: Dashboard, url: str) -> Any:
    res = dash.client.get(url, headers=bearer(dash.tokens["viewer"]))
    assert res.status_code == 200, res.text
    return res.json()


def _lease(dash: Dashboard, expired: bool) -> None:
    """A controller on another host holds the campaign's lease (renewed, or long expired)."""
    me = LeaseHolder.this_process()
    holder = LeaseHolder(me.holder + "-test", "another-host", 1)  # never judged "gone"
    with transaction(dash.factory) as s:
        if lease_of(s, dash.store.campaign_id) is None:
            acquire_lease(s, dash.store.campaign_id, holder, ttl_s=60)
    if expired:
        with transaction(dash.factory) as s:
            s.execute(update(ControllerLeaseRow).values(expires_at=utcnow() - timedelta(seconds=5)))


def _busy(dash: Dashboard, since_s: float) -> None:
    """station-1 BUSY with a step running for ``since_s`` seconds."""
    cid = dash.store.campaign_id
    with transaction(dash.factory) as s:
        e = s.get(ExperimentRow, dash.store.proposed)
        assert e is not None
        set_experiment_status(s, e, ExperimentStatus.QUEUED)
        st = add_step(
            s, e, index=0, kind="station", action="measure", parameters={}, request_id="hung"
        )
        set_experiment_status(s, e, ExperimentStatus.RUNNING)
        set_step_status(
            s,
            st,
            StepStatus.RUNNING,
            instrument="station-1",
            started_at=utcnow() - timedelta(seconds=since_s),
        )
        upsert(
            s,
            cid,
            "station-1",
            kind="station",
            address="tcp://127.0.0.1:5601",
            state=InstrumentState.BUSY,
            last_seen_at=utcnow(),
        )


def test_a_campaign_whose_lease_expired_reads_controller_lost_everywhere(
    dash: Dashboard,
) -> None:
    cid = dash.store.campaign_id
    _lease(dash, expired=False)
    _busy(dash, since_s=1)
    live = _get(dash, f"/api/campaigns/{cid}")
    assert (live["display_status"], live["controller_lost"]) == ("RUNNING", False)
    assert live["instruments"][0]["display_state"] == "BUSY"

    _lease(dash, expired=True)
    listed = next(c for c in _get(dash, "/api/campaigns") if c["id"] == cid)
    detail = _get(dash, f"/api/campaigns/{cid}")
    instruments = _get(dash, f"/api/campaigns/{cid}/instruments")
    assert listed["status"] == "RUNNING"  # what the store says ...
    assert listed["display_status"] == "CONTROLLER LOST"  # ... and what it means
    assert detail["controller_lost"] is True
    assert detail["display_status"] == "CONTROLLER LOST"
    assert [i["display_state"] for i in instruments] == ["CONTROLLER LOST"]
    assert [i["display_state"] for i in _get(dash, "/api/instruments")] == ["CONTROLLER LOST"]


def test_a_running_campaign_without_any_lease_is_lost_too(dash: Dashboard) -> None:
    detail = _get(dash, f"/api/campaigns/{dash.store.campaign_id}")
    assert detail["controller"] is None
    assert detail["display_status"] == "CONTROLLER LOST"


def test_a_hung_instrument_reads_overdue_with_how_long(dash: Dashboard) -> None:
    cid = dash.store.campaign_id
    _lease(dash, expired=False)
    _busy(dash, since_s=125)  # the finished measure steps took 5 s: expected 15 s
    [inst] = _get(dash, f"/api/campaigns/{cid}/instruments")
    assert inst["state"] == "BUSY"
    assert inst["running"]["action"] == "measure"
    assert inst["running"]["experiment_id"] == dash.store.proposed
    assert inst["running"]["expected_s"] == 15.0
    assert 109 < inst["overdue_s"] < 130
    assert inst["display_state"].startswith("OVERDUE by 1 min 5")
    assert inst["fault_total"] == 0
    assert 0.0 < inst["utilisation"] <= 1.0


def test_a_busy_instrument_within_its_expected_time_is_only_busy(dash: Dashboard) -> None:
    _lease(dash, expired=False)
    _busy(dash, since_s=2)
    [inst] = _get(dash, f"/api/campaigns/{dash.store.campaign_id}/instruments")
    assert (inst["display_state"], inst["overdue_s"]) == ("BUSY", None)


def test_duration_words() -> None:
    assert duration_words(12.7) == "12 s"
    assert duration_words(200) == "3 min 20 s"
    assert duration_words(7500) == "2 h 05 min"


def test_overview_puts_a_lost_controller_first(dash: Dashboard) -> None:
    from controller.store import add_event

    cid = dash.store.campaign_id
    _lease(dash, expired=True)
    with transaction(dash.factory) as s:
        add_event(s, "alarm.instrument_quarantined", "station-1 quarantined", campaign_id=cid)
    ov = _get(dash, "/api/overview")
    [c] = [c for c in ov["campaigns"] if c["id"] == cid]
    assert c["display_status"] == "CONTROLLER LOST"
    assert c["open_alarms"] == 1
    assert c["awaiting_approval"] == 1
    assert [b["objective"] for b in c["best"]] == ["y", "cost"]
    assert [b["value"] for b in c["best"]] == [2.0, 1.0]
    assert [a["what"] for a in ov["attention"]] == ["controller_lost", "alarms", "approval"]


def test_alarms_are_acknowledged_with_who_and_when(dash: Dashboard) -> None:
    from controller.store import add_event

    cid = dash.store.campaign_id
    with transaction(dash.factory) as s:
        alarm = add_event(s, "alarm.instrument_quarantined", "quarantined", campaign_id=cid)
    [open_one] = _get(dash, "/api/alarms?open=true")
    assert (open_one["id"], open_one["acknowledged"]) == (alarm.id, None)
    url = f"/api/alarms/{alarm.id}/ack"
    assert dash.client.post(url, headers=bearer(dash.tokens["viewer"])).status_code == 403
    op = bearer(dash.tokens["operator"])
    res = dash.client.post(url, headers=op, json={"note": "cleaned the nozzle"})
    assert res.status_code == 200, res.text
    assert dash.client.post(url, headers=op).status_code == 409
    assert dash.client.post("/api/alarms/999999/ack", headers=op).status_code == 404
    assert _get(dash, "/api/alarms?open=true") == []
    [acked] = _get(dash, "/api/alarms")
    assert acked["acknowledged"]["by"] == "operator"
    assert acked["acknowledged"]["note"] == "cleaned the nozzle"


def test_approval_queue_says_why_the_planner_chose_each(dash: Dashboard) -> None:
    [p] = _get(dash, "/api/approvals")
    assert p["id"] == dash.store.proposed
    assert p["campaign"] == "approval"
    assert p["why"]["proposer"].startswith("random v1")
    assert "random planner" in p["why"]["summary"]
