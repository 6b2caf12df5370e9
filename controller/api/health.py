"""What needs attention about instruments: what each runs, whether it is overdue, and
whether anybody still drives it.

An instrument row is the controller's last word about it, so a dead controller leaves its
instruments BUSY forever, and a hung instrument looks just as BUSY as a working one. The
dashboard therefore derives, from the store alone:

* ``display_state``: ``CONTROLLER LOST`` when the campaign's controller stopped renewing its
  lease; ``OVERDUE`` when the step it runs has taken longer than expected; else its state;
* the step it runs (experiment, action, seconds so far) and the expected seconds: the
  instrument's declared ``timeout_s`` when the campaign sets one, else
  :data:`OVERDUE_FACTOR` times the median duration of its finished steps of that action;
* its fault total (failed steps, not only the consecutive faults the controller counts),
  utilisation over the last :data:`UTILISATION_WINDOW`, and heartbeat age.
"""

from __future__ import annotations

import logging
import statistics
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.api.views import CONTROLLER_LOST, controller_view, instrument_view, iso
from controller.api.views import is_controller_lost as _lost
from controller.store import list_instruments
from models.status import StepStatus
from models.tables import CampaignRow, ExperimentRow, StepRow, utcnow

logger = logging.getLogger(__name__)

OVERDUE = "OVERDUE"
"""``display_state`` of an instrument whose running step passed its expected time."""

OVERDUE_FACTOR = 3.0
"""Without a declared timeout, a step is overdue after this many times the median of its
instrument's finished steps of the same action."""

UTILISATION_WINDOW = timedelta(hours=1)
"""Utilisation is the busy share of this window, up to now."""


def duration_words(seconds: float) -> str:
    """``"2 h 05 min"``, ``"3 min 20 s"`` or ``"12 s"``."""
    s = max(0, int(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def _timeouts(spec: dict[str, Any]) -> dict[str, float]:
    return {
        str(i["name"]): float(i["timeout_s"])
        for i in spec.get("instruments", [])
        if i.get("timeout_s") is not None
    }


def _step_facts(s: Session, campaign_id: int, now: datetime) -> dict[str, dict[str, Any]]:
    """Per instrument: running step, durations by action, failures, busy seconds."""
    since = now - UTILISATION_WINDOW
    rows = s.execute(
        select(
            StepRow.instrument,
            StepRow.experiment_id,
            StepRow.action,
            StepRow.status,
            StepRow.sent_at,
            StepRow.started_at,
            StepRow.finished_at,
            StepRow.error,
        )
        .join(ExperimentRow, StepRow.experiment_id == ExperimentRow.id)
        .where(ExperimentRow.campaign_id == campaign_id, StepRow.instrument.is_not(None))
        .order_by(StepRow.id)
    ).all()
    out: dict[str, dict[str, Any]] = {}
    for inst, eid, action, status, sent, started, finished, error in rows:
        if inst is None:
            continue
        f = out.setdefault(
            inst, {"running": None, "durations": {}, "faults": 0, "busy_s": 0.0, "error": None}
        )
        st = str(getattr(status, "value", status))
        begin = started or sent
        if st == StepStatus.FAILED.value:
            f["faults"] += 1
            f["error"] = error or f["error"]
        if st == StepStatus.RUNNING.value and begin is not None:
            f["running"] = {"experiment_id": eid, "action": action, "since": begin}
        if st == StepStatus.COMPLETED.value and begin is not None and finished is not None:
            f["durations"].setdefault(action, []).append((finished - begin).total_seconds())
        if begin is not None:
            end = finished or now
            lo, hi = max(begin, since), min(end, now)
            if hi > lo:
                f["busy_s"] += (hi - lo).total_seconds()
    return out


def instruments_view(
    s: Session, campaign_id: int, quiet_after_s: float, *, lost: bool | None = None
) -> list[dict[str, Any]]:
    """Every instrument of the campaign, by name, with what the module docs derive.

    Args:
        s: The session.
        campaign_id: The campaign.
        quiet_after_s: Silence after which an instrument counts as quiet, in seconds.
        lost: Whether the campaign's controller is lost (looked up when ``None``).
    """
    campaign = s.get(CampaignRow, campaign_id)
    if campaign is None:
        return []
    if lost is None:
        lost = _lost(campaign.status, controller_view(s, campaign_id))
    now = utcnow()
    timeouts = _timeouts(dict(campaign.spec))
    facts = _step_facts(s, campaign_id, now)
    out = []
    for row in list_instruments(s, campaign_id):
        view = instrument_view(row, quiet_after_s)
        f = facts.get(row.name, {})
        running = f.get("running") if row.state.value == "BUSY" else None
        view.update(
            campaign_id=campaign_id,
            campaign=campaign.name,
            fault_total=int(f.get("faults", 0)),
            last_error=f.get("error"),
            utilisation=min(1.0, f.get("busy_s", 0.0) / UTILISATION_WINDOW.total_seconds()),
            running=None,
            overdue_s=None,
            display_state=CONTROLLER_LOST if lost else row.state.value,
        )
        if running is not None:
            elapsed = (now - running["since"]).total_seconds()
            past = f["durations"].get(running["action"], [])
            expected = timeouts.get(row.name)
            if expected is None and past:
                expected = OVERDUE_FACTOR * statistics.median(past)
            view["running"] = {
                "experiment_id": running["experiment_id"],
                "action": running["action"],
                "since": iso(running["since"]),
                "elapsed_s": elapsed,
                "expected_s": expected,
            }
            if expected is not None and elapsed > expected:
                view["overdue_s"] = elapsed - expected
                if not lost:
                    view["display_state"] = f"{OVERDUE} by {duration_words(elapsed - expected)}"
        out.append(view)
    return out
