"""Queries behind the dashboard's lab-wide pages: the event log by page, alarms and their
acknowledgements, each campaign's best result, and the lab instruments.

The event log is read newest first in pages whose cursor is an event id (``before_id``), so
a page never shifts when new entries arrive. An alarm is an event of kind ``alarm.<what>``
(see :mod:`controller.alarms`); acknowledging one appends an ``ack.alarm`` event naming it
(``data.alarm_event``) with who acknowledged it and when, so nothing is ever changed in
place. Like the rest of the store, these functions receive a session and never open one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller.store.lab import snapshot
from controller.store.repo import add_event
from models.errors import StoreError
from models.status import ExperimentStatus
from models.tables import (
    CampaignRow,
    EventRow,
    ExperimentRow,
    LabInstrumentRow,
    LabRow,
    MeasurementRow,
)

logger = logging.getLogger(__name__)

ALARM_PREFIX = "alarm."
"""Kinds of events that are alarms."""

ACK_KIND = "ack.alarm"
"""Kind of the event that acknowledges an alarm."""


def event_page(
    s: Session,
    *,
    campaign_id: int | None = None,
    before_id: int | None = None,
    kind_prefix: str | None = None,
    instrument: str | None = None,
    limit: int = 100,
) -> list[EventRow]:
    """A page of the event log, newest first.

    Args:
        s: The session.
        campaign_id: Only this campaign's events (``None``: the whole lab).
        before_id: Only events older than this id (the last id of the previous page).
        kind_prefix: Only events whose kind starts with this (``"alarm."``).
        instrument: Only events about this instrument.
        limit: At most this many.
    """
    stmt = select(EventRow)
    if campaign_id is not None:
        stmt = stmt.where(EventRow.campaign_id == campaign_id)
    if before_id is not None:
        stmt = stmt.where(EventRow.id < before_id)
    if kind_prefix:
        escaped = kind_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(EventRow.kind.like(escaped + "%", escape="\\"))
    if instrument:
        stmt = stmt.where(EventRow.instrument == instrument)
    return list(s.scalars(stmt.order_by(EventRow.id.desc()).limit(limit)))


def newest_event_id(s: Session, campaign_id: int | None = None) -> int:
    """The id of the newest event (of one campaign, or of the lab); 0 when there is none."""
    stmt = select(func.max(EventRow.id))
    if campaign_id is not None:
        stmt = stmt.where(EventRow.campaign_id == campaign_id)
    return int(s.scalar(stmt) or 0)


def acknowledgements(s: Session, alarm_ids: Sequence[int]) -> dict[int, EventRow]:
    """The acknowledging event of each of ``alarm_ids`` that was acknowledged."""
    if not alarm_ids:
        return {}
    wanted = set(alarm_ids)
    out: dict[int, EventRow] = {}
    for row in s.scalars(select(EventRow).where(EventRow.kind == ACK_KIND).order_by(EventRow.id)):
        target = int((row.data or {}).get("alarm_event", -1))
        if target in wanted and target not in out:
            out[target] = row
    return out


def open_alarms(s: Session, campaign_id: int | None = None, limit: int = 500) -> list[EventRow]:
    """Alarms nobody has acknowledged yet, newest first."""
    alarms = event_page(s, campaign_id=campaign_id, kind_prefix=ALARM_PREFIX, limit=limit)
    acked = acknowledgements(s, [a.id for a in alarms])
    return [a for a in alarms if a.id not in acked]


def acknowledge_alarm(s: Session, alarm_id: int, *, actor: str, note: str = "") -> EventRow:
    """Record that ``actor`` has seen alarm ``alarm_id`` (an ``ack.alarm`` event).

    Raises:
        StoreError: If there is no such alarm, or it was acknowledged already.
    """
    alarm = s.get(EventRow, alarm_id)
    if alarm is None or not alarm.kind.startswith(ALARM_PREFIX):
        raise StoreError(f"no alarm with id {alarm_id}")
    done = acknowledgements(s, [alarm_id]).get(alarm_id)
    if done is not None:
        raise StoreError(f"alarm {alarm_id} was acknowledged already by {done.actor}")
    who = actor.removeprefix("user:")
    row = add_event(
        s,
        ACK_KIND,
        f"{who} acknowledged alarm {alarm_id}" + (f": {note}" if note else ""),
        campaign_id=alarm.campaign_id,
        instrument=alarm.instrument,
        data={"alarm_event": alarm_id, "note": note},
        actor=actor,
    )
    s.flush()  # the id and time are the answer
    return row


def _utility(objective: dict[str, Any], value: float) -> float:
    target = objective.get("target")
    if target is not None:
        return -abs(value - float(target))
    return value if objective.get("direction", "maximize") == "maximize" else -value


def best_results(s: Session, campaign: CampaignRow) -> list[dict[str, Any]]:
    """The best completed experiment for each objective, as the CLI summary shows it.

    Returns:
        One ``{"objective", "direction", "value", "experiment_id", "parameters"}`` per
        objective (outcome constraints left out) that has a measured value.
    """
    objectives = [
        o for o in dict(campaign.spec).get("objectives", []) if o.get("kind") != "constraint"
    ]
    if not objectives:
        return []
    names = [o["name"] for o in objectives]
    rows = s.execute(
        select(
            MeasurementRow.name,
            MeasurementRow.value,
            ExperimentRow.id,
            ExperimentRow.parameters,
        )
        .join(ExperimentRow, MeasurementRow.experiment_id == ExperimentRow.id)
        .where(
            ExperimentRow.campaign_id == campaign.id,
            ExperimentRow.status == ExperimentStatus.COMPLETED.value,
            MeasurementRow.name.in_(names),
            MeasurementRow.value.is_not(None),
        )
    ).all()
    out = []
    for o in objectives:
        scored = [(float(v), eid, p) for n, v, eid, p in rows if n == o["name"]]
        if not scored:
            continue
        value, eid, params = max(scored, key=lambda t: _utility(o, t[0]))
        target = o.get("target")
        out.append(
            {
                "objective": o["name"],
                "direction": f"target {target:g}"
                if target is not None
                else o.get("direction", "maximize"),
                "value": value,
                "experiment_id": eid,
                "parameters": dict(params),
            }
        )
    return out


def lab_instruments(s: Session) -> list[dict[str, Any]]:
    """Every instrument of every applied lab file: its lab-wide state (in service,
    quarantined until when, out of service and why, who changed it) and who holds it now.

    Returns:
        One dict per lab instrument, by lab then declaration order: ``lab``, ``name``,
        ``kind``, ``address``, ``gateway``, ``state``, ``reason``, ``until``, ``changed_by``,
        ``updated_at`` and ``held_by`` (``{"campaign_id", "campaign", "experiment_id"}`` of
        a live grant, or ``None``).
    """
    out: list[dict[str, Any]] = []
    for lab in s.scalars(select(LabRow).order_by(LabRow.name)):
        snap = snapshot(s, lab.id)
        rows = s.scalars(
            select(LabInstrumentRow)
            .where(LabInstrumentRow.lab_id == lab.id)
            .order_by(LabInstrumentRow.id)
        )
        for r in rows:
            holder = snap.held.get(r.name)
            out.append(
                {
                    "lab": lab.name,
                    "name": r.name,
                    "kind": r.kind,
                    "address": r.address,
                    "gateway": r.gateway,
                    "state": r.state.value,
                    "reason": r.reason,
                    "until": None if r.until is None else r.until.isoformat(),
                    "changed_by": r.changed_by,
                    "updated_at": r.updated_at.isoformat(),
                    "held_by": None
                    if holder is None
                    else {
                        "campaign_id": holder.campaign_id,
                        "campaign": holder.campaign,
                        "experiment_id": holder.experiment_id,
                    },
                }
            )
    return out
