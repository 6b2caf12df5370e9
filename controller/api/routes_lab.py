"""Lab-wide endpoints: the overview, every instrument, alarms, and the approval queue.

The overview answers "what needs me first?": each campaign with its state and health
(``CONTROLLER LOST`` when no live controller drives it), progress, best result, last
activity, open alarms and proposals awaiting approval, plus an ``attention`` list ordered by
urgency. Alarms are acknowledged as ``ack.alarm`` events (who and when), see
:mod:`controller.store.dashboard`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller.api.health import instruments_view
from controller.api.routes_campaigns import DbSession, Operator, Settings, Viewer
from controller.api.schemas import (
    AckedOut,
    AlarmOut,
    ApprovalOut,
    InstrumentOut,
    LabInstrumentOut,
    OverviewOut,
)
from controller.api.views import campaign_view, decision_words, event_view, experiment_view
from controller.store.dashboard import (
    ALARM_PREFIX,
    acknowledge_alarm,
    acknowledgements,
    best_results,
    event_page,
    open_alarms,
)
from controller.store.dashboard import (
    lab_instruments as lab_instrument_rows,
)
from controller.store.tasks import deadline_passed, list_tasks
from models.errors import StoreError
from models.status import ExperimentStatus
from models.tables import CampaignRow, DecisionRow, EventRow, ExperimentRow

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["lab"])

FINISHED = frozenset({"COMPLETED", "ABORTED", "FAILED"})


class AckBody(BaseModel):
    """An optional note with an acknowledgement."""

    note: str = Field(default="", max_length=500)


def _last_activity(s: Session, campaign_id: int) -> str | None:
    t = s.scalar(select(func.max(EventRow.created_at)).where(EventRow.campaign_id == campaign_id))
    return None if t is None else t.isoformat()


def _awaiting(s: Session, campaign_id: int) -> int:
    return int(
        s.scalar(
            select(func.count())
            .select_from(ExperimentRow)
            .where(
                ExperimentRow.campaign_id == campaign_id,
                ExperimentRow.status == ExperimentStatus.PROPOSED.value,
            )
        )
        or 0
    )


@router.get("/overview", summary="The lab at a glance", response_model=OverviewOut)
def overview(s: DbSession, settings: Settings, _: Viewer) -> dict[str, Any]:
    """Every campaign with health, progress, best result, activity, alarms and approvals,
    the open tasks of manual instruments, and what needs the operator first
    (``attention``, most urgent first)."""
    campaigns = []
    attention: list[dict[str, Any]] = []
    alarms = open_alarms(s)
    for c in s.scalars(select(CampaignRow).order_by(CampaignRow.id.desc())):
        view = campaign_view(s, c)
        view["best"] = best_results(s, c)
        view["last_activity"] = _last_activity(s, c.id)
        view["open_alarms"] = sum(1 for a in alarms if a.campaign_id == c.id)
        needs_approval = bool(view["require_approval"])
        view["awaiting_approval"] = _awaiting(s, c.id) if needs_approval else 0
        insts = instruments_view(s, c.id, settings.instrument_quiet_s, lost=view["controller_lost"])
        view["overdue_instruments"] = [i["name"] for i in insts if i["overdue_s"] is not None]
        campaigns.append(view)
        where = {"campaign_id": c.id, "campaign": c.name}
        if view["controller_lost"]:
            text = f"{c.name}: controller lost; nothing drives it (start it again)"
            attention.append({"level": 0, "what": "controller_lost", "text": text, **where})
        for name in view["overdue_instruments"]:
            text = f"{c.name}: instrument {name} is overdue"
            attention.append({"level": 1, "what": "overdue", "text": text, **where})
        if view["open_alarms"]:
            text = f"{c.name}: {view['open_alarms']} open alarm(s)"
            attention.append({"level": 2, "what": "alarms", "text": text, **where})
        if view["awaiting_approval"] and c.status.value not in FINISHED:
            text = f"{c.name}: {view['awaiting_approval']} proposal(s) await approval"
            attention.append({"level": 3, "what": "approval", "text": text, **where})
    tasks = list_tasks(s)
    late = sum(1 for t in tasks if deadline_passed(t))
    if late:
        text = f"{late} task(s) for a person are past their deadline"
        attention.append({"level": 1, "what": "tasks", "text": text, "campaign_id": None})
    if len(tasks) > late:
        text = f"{len(tasks) - late} task(s) wait for a person"
        attention.append({"level": 2, "what": "tasks", "text": text, "campaign_id": None})
    lab_alarms = sum(1 for a in alarms if a.campaign_id is None)
    if lab_alarms:
        text = f"{lab_alarms} open alarm(s) of the lab (logins, ...)"
        attention.append({"level": 2, "what": "alarms", "text": text, "campaign_id": None})
    attention.sort(key=lambda a: a["level"])
    return {
        "campaigns": campaigns,
        "attention": attention,
        "open_alarms": len(alarms),
        "open_tasks": len(tasks),
    }


@router.get(
    "/instruments",
    summary="Every instrument of the lab",
    tags=["instruments"],
    response_model=list[InstrumentOut],
)
def lab_instruments(s: DbSession, settings: Settings, _: Viewer) -> list[dict[str, Any]]:
    """Every instrument of every campaign that is not finished, then the finished ones:
    state (``display_state``: CONTROLLER LOST, OVERDUE), the step it runs, last error,
    fault total, utilisation and heartbeat age."""
    out: list[dict[str, Any]] = []
    rows = s.scalars(select(CampaignRow).order_by(CampaignRow.id.desc())).all()
    for c in sorted(rows, key=lambda r: r.status.value in FINISHED):
        for view in instruments_view(s, c.id, settings.instrument_quiet_s):
            view["campaign_status"] = c.status.value
            out.append(view)
    return out


@router.get(
    "/lab-instruments",
    summary="The instruments of the applied lab files",
    tags=["instruments"],
    response_model=list[LabInstrumentOut],
)
def lab_instrument_states(s: DbSession, _: Viewer) -> list[dict[str, Any]]:
    """Every instrument a lab file declares (``sdlab lab apply``): its lab-wide state, why,
    until when, and the campaign and experiment holding it now."""
    return lab_instrument_rows(s)


@router.get(
    "/alarms", summary="Alarms, open or all", tags=["events"], response_model=list[AlarmOut]
)
def list_alarms(
    s: DbSession,
    _: Viewer,
    campaign_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    only_open: Annotated[bool, Query(alias="open")] = False,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    """Alarms newest first, each with ``acknowledged`` (who, when, note) or ``null``."""
    if only_open:
        rows = open_alarms(s, campaign_id, limit=limit)
    else:
        rows = event_page(
            s, campaign_id=campaign_id, before_id=before_id, kind_prefix=ALARM_PREFIX, limit=limit
        )
    acks = acknowledgements(s, [r.id for r in rows])
    out = []
    for r in rows:
        view = event_view(r)
        ack = acks.get(r.id)
        view["acknowledged"] = (
            None
            if ack is None
            else {
                "by": ack.actor.removeprefix("user:"),
                "at": ack.created_at.isoformat(),
                "note": (ack.data or {}).get("note", ""),
            }
        )
        out.append(view)
    return out


@router.post(
    "/alarms/{alarm_id}/ack",
    summary="Acknowledge an alarm",
    tags=["events"],
    responses={404: {"description": "No such alarm"}, 409: {"description": "Acknowledged already"}},
    response_model=AckedOut,
)
def ack_alarm(
    alarm_id: Annotated[int, Field(ge=1, le=2**62)],
    s: DbSession,
    who: Operator,
    body: AckBody | None = None,
) -> dict[str, Any]:
    """Record that the operator has seen the alarm (who and when)."""
    if s.get(EventRow, alarm_id) is None:
        raise HTTPException(404, f"no alarm with id {alarm_id}")
    try:
        row = acknowledge_alarm(s, alarm_id, actor=who.actor, note=(body or AckBody()).note)
    except StoreError as exc:
        code = 404 if "no alarm" in str(exc) else 409
        raise HTTPException(code, str(exc)) from exc
    return {"alarm_id": alarm_id, "by": who.name, "at": row.created_at.isoformat()}


def _why(d: DecisionRow | None, e: ExperimentRow) -> dict[str, Any]:
    """Why the planner chose ``e``: acquisition value, prediction, uncertainty, proposer."""
    if d is None:
        return {"proposer": e.origin or "operator", "summary": "No planner decision recorded."}
    i = e.proposal_index
    scores = list(d.candidate_scores or [])
    details = dict(d.details or {})
    picked: dict[str, Any] = {}
    for key, value in details.items():
        wanted = any(w in key for w in ("pred", "mean", "std", "uncert"))
        if wanted and isinstance(value, list) and len(value) == d.n_proposed and i < len(value):
            picked[key] = value[i]
    return {
        "proposer": f"{d.planner} v{d.version}" + (f" ({e.origin})" if e.origin else ""),
        "acquisition_value": scores[i] if i < len(scores) else None,
        "acquisition": details.get("acquisition"),
        "predictions": picked,
        "summary": decision_words(d),
    }


@router.get(
    "/approvals",
    summary="Proposals awaiting approval, lab-wide",
    tags=["lab"],
    response_model=list[ApprovalOut],
)
def approvals(
    s: DbSession,
    _: Viewer,
    campaign_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> list[dict[str, Any]]:
    """Every PROPOSED experiment of campaigns that require approval, oldest first, with why
    the planner chose it. Approve or reject them with the campaign's ``approve`` and
    ``reject`` controls (many ids at once, with a reason)."""
    stmt = (
        select(ExperimentRow, CampaignRow)
        .join(CampaignRow, ExperimentRow.campaign_id == CampaignRow.id)
        .where(ExperimentRow.status == ExperimentStatus.PROPOSED.value)
        .order_by(ExperimentRow.id)
    )
    if campaign_id is not None:
        stmt = stmt.where(CampaignRow.id == campaign_id)
    out = []
    decisions: dict[int, DecisionRow | None] = {}
    for e, c in s.execute(stmt).all():
        if not bool(dict(c.spec).get("safety", {}).get("require_approval", False)):
            continue
        if e.decision_id is not None and e.decision_id not in decisions:
            decisions[e.decision_id] = s.get(DecisionRow, e.decision_id)
        d = decisions.get(e.decision_id) if e.decision_id is not None else None
        view = experiment_view(e)
        view.update(campaign=c.name, why=_why(d, e))
        out.append(view)
    return out
