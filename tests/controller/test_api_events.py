"""The live stream: what the watcher reports as the store changes, and the SSE endpoint."""

from __future__ import annotations

import json
import signal
import time
from datetime import timedelta
from pathlib import Path

import httpx

from controller.api.events import CampaignWatcher
from controller.store import (
    add_event,
    add_experiment,
    add_step,
    make_engine,
    migrate,
    session_factory,
    set_experiment_status,
    set_step_status,
    transaction,
    upsert_instrument,
)
from models.status import ExperimentStatus, InstrumentState, StepStatus
from models.tables import ExperimentRow, utcnow
from tests.controller.api_store import bearer, make_users, populate
from tests.controller.conftest import Dashboard
from tests.integration.lab_harness import start_dashboard


def _poll(dash: Dashboard, w: CampaignWatcher) -> list[tuple[str, dict]]:
    with transaction(dash.factory) as s:
        return w.poll(s)


def test_watcher_reports_changes_only(dash: Dashboard) -> None:
    cid = dash.store.campaign_id
    w = CampaignWatcher(cid, quiet_after_s=30.0)
    assert _poll(dash, w) == []  # the first poll takes stock
    assert _poll(dash, w) == []
    with transaction(dash.factory) as s:
        e = add_experiment(s, cid, {"x1": 0.3, "x2": 0.3})
        set_experiment_status(s, e, ExperimentStatus.QUEUED)
        eid = e.id
    changes = _poll(dash, w)
    kinds = [k for k, _ in changes]
    assert ("experiment", eid) in [(k, d.get("id")) for k, d in changes]
    assert "campaign" in kinds  # the counts changed
    with transaction(dash.factory) as s:
        e2 = s.get(ExperimentRow, eid)
        assert e2 is not None
        st = add_step(
            s, e2, index=0, kind="station", action="measure", parameters={}, request_id="live-1"
        )
        set_experiment_status(s, e2, ExperimentStatus.RUNNING)
        set_step_status(s, st, StepStatus.RUNNING, instrument="station-1")
    running = _poll(dash, w)
    assert [d["status"] for k, d in running if k == "step"] == ["RUNNING"]
    assert [d["status"] for k, d in running if k == "experiment"] == ["RUNNING"]
    with transaction(dash.factory) as s:
        st2 = s.get(ExperimentRow, eid).steps[0]  # type: ignore[union-attr]
        set_step_status(s, st2, StepStatus.COMPLETED)
        add_event(s, "note", "hello", campaign_id=cid)
    done = _poll(dash, w)
    assert [d["status"] for k, d in done if k == "step"] == ["COMPLETED"]
    assert [d["message"] for k, d in done if k == "log"] == ["hello"]
    assert _poll(dash, w) == []


def test_watcher_reports_an_instrument_going_quiet(dash: Dashboard) -> None:
    cid = dash.store.campaign_id
    w = CampaignWatcher(cid, quiet_after_s=30.0)
    _poll(dash, w)
    with transaction(dash.factory) as s:
        upsert_instrument(
            s,
            cid,
            "station-1",
            kind="station",
            address="tcp://127.0.0.1:5601",
            state=InstrumentState.UNKNOWN,
            last_seen_at=utcnow() - timedelta(seconds=120),
        )
    [(_, data)] = [c for c in _poll(dash, w) if c[0] == "instrument"]
    assert data["quiet"] is True
    assert data["state"] == "UNKNOWN"


def test_stream_endpoint_sends_server_sent_events(dash: Dashboard) -> None:
    cid = dash.store.campaign_id
    headers = bearer(dash.tokens["viewer"])
    seen: list[str] = []
    with dash.client.stream("GET", f"/api/campaigns/{cid}/stream?max_s=20", headers=headers) as res:
        assert res.status_code == 200
        assert res.headers["content-type"].startswith("text/event-stream")
        for line in res.iter_lines():
            seen.append(line)
            if line.startswith("retry: "):  # the stream has taken stock: change something
                with transaction(dash.factory) as s:
                    add_experiment(s, cid, {"x1": 0.25, "x2": 0.75})
            if line.startswith("data: ") and "event: experiment" in seen:
                break
    assert seen[0].startswith("retry: ")
    i = seen.index("event: experiment")
    data = json.loads(seen[i + 2].removeprefix("data: "))
    assert data["parameters"] == {"x1": 0.25, "x2": 0.75}
    assert data["status"] == "PROPOSED"
    assert dash.client.get(f"/api/campaigns/{cid}/stream").status_code == 401
    res = dash.client.get("/api/campaigns/9999/stream?max_s=0.1", headers=headers)
    assert res.status_code == 404


def test_sse_format() -> None:
    from controller.api.events import sse

    text = sse("experiment", {"id": 3}, 7)
    assert text == 'event: experiment\nid: 7\ndata: {"id": 3}\n\n'
    assert json.loads(text.split("data: ")[1]) == {"id": 3}


def _log_ids(dash: Dashboard, url: str, headers: dict[str, str], until: int) -> list[int]:
    """Ids of the ``log`` events of a stream, read until one with id ``until`` arrives."""
    got: list[int] = []
    with dash.client.stream("GET", url, headers=headers) as res:
        assert res.status_code == 200
        kind = ""
        for line in res.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind == "log":
                got.append(json.loads(line.removeprefix("data: "))["id"])
                if got[-1] >= until:
                    break
    return got


def test_stream_never_replays_old_log_entries(dash: Dashboard) -> None:
    cid = dash.store.campaign_id
    with transaction(dash.factory) as s:  # more than the 500 a poll reads
        for i in range(620):
            add_event(s, "note.old", f"old {i}", campaign_id=cid)
    headers = bearer(dash.tokens["viewer"])
    seen: list[str] = []
    with dash.client.stream("GET", f"/api/campaigns/{cid}/stream?max_s=20", headers=headers) as res:
        for line in res.iter_lines():
            seen.append(line)
            if line.startswith("retry: "):
                with transaction(dash.factory) as s:
                    add_event(s, "note.new", "new", campaign_id=cid)
            if line.startswith("data: ") and '"note.new"' in line:
                break
    logs = [json.loads(x.removeprefix("data: ")) for x in seen if x.startswith("data: ")]
    assert [e["message"] for e in logs if "kind" in e] == ["new"]


def test_stream_resumes_after_the_last_event_id(dash: Dashboard) -> None:
    cid = dash.store.campaign_id
    with transaction(dash.factory) as s:
        rows = [add_event(s, "note", f"n{i}", campaign_id=cid) for i in range(5)]
    ids = [r.id for r in rows]
    headers = bearer(dash.tokens["viewer"])
    url = f"/api/campaigns/{cid}/stream?max_s=20"
    resumed = _log_ids(dash, url, {**headers, "Last-Event-ID": str(ids[1])}, until=ids[-1])
    assert resumed == ids[2:]
    after = _log_ids(dash, url + f"&after_id={ids[2]}", headers, until=ids[-1])
    assert after == ids[3:]


def test_disabling_a_user_ends_their_stream(dash: Dashboard) -> None:
    cid = dash.store.campaign_id
    headers = bearer(dash.tokens["viewer"])
    seen: list[str] = []
    url = f"/api/campaigns/{cid}/stream?max_s=30"
    with dash.client.stream("GET", url, headers=headers) as res:
        for line in res.iter_lines():
            seen.append(line)
            if line.startswith("retry: "):
                r = dash.client.delete("/api/users/viewer", headers=bearer(dash.tokens["admin"]))
                assert r.status_code == 200
    # the server ended the stream (iter_lines returned), telling why
    assert "event: closed" in seen


def test_sdlab_serve_stops_on_sigint_with_a_stream_open(tmp_path: Path) -> None:
    """A browser on a campaign page holds a stream for up to ten minutes; Ctrl-C on the
    server ends it (without ``closed``, so the browser reconnects later) and the server exits
    cleanly, instead of waiting for the stream."""
    db = f"sqlite:///{tmp_path / 'serve.db'}"
    engine = make_engine(db)
    migrate(engine)
    factory = session_factory(engine)
    tokens = make_users(factory, 1000)
    cid = populate(factory).campaign_id
    engine.dispose()
    proc, base = start_dashboard(db, tmp_path)
    try:
        seen: list[str] = []
        url = f"{base}/api/campaigns/{cid}/stream"  # the default max_s: 600 s
        stopped_at = None
        ended = False
        with httpx.stream("GET", url, headers=bearer(tokens["viewer"]), timeout=120) as res:
            for line in res.iter_lines():  # a keepalive at least every 15 s
                seen.append(line)
                if line.startswith("retry: "):  # the stream has taken stock
                    proc.send_signal(signal.SIGINT)
                    stopped_at = time.monotonic()
                if stopped_at is not None and time.monotonic() - stopped_at > 60:
                    break
            else:
                ended = True
        assert ended, "the stream went on after the server was asked to stop"
        assert "event: closed" not in seen  # so the browser comes back once the server does
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "Traceback" not in out, out
        assert "ERROR" not in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
