"""What the API returns: store rows turned into JSON-ready dicts, and a decision in words.

The chart data (best-so-far curve, parameter space, Pareto front, phase map, instrument
timeline) lives in :mod:`controller.api.charts`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.store import count_by_status
from controller.store.lease import lease_is_live, lease_of
from models.status import CampaignStatus, ExperimentStatus
from models.tables import (
    CampaignRow,
    CommandRow,
    DecisionRow,
    EventRow,
    ExperimentRow,
    InstrumentRow,
    SampleRow,
    utcnow,
)

logger = logging.getLogger(__name__)

PLANNER_WORDS = {
    "random": "drew points uniformly at random (no model)",
    "sobol": "took the next points of a scrambled Sobol sequence, a space-filling design "
    "(no model)",
    "qlognei": "Bayesian optimisation with a Gaussian-process model and the qLogNEI "
    "acquisition function",
}
"""How each planner works, in a phrase, for :func:`decision_words`."""


def iso(t: datetime | None) -> str | None:
    """A timestamp as ISO-8601 text (``None`` stays ``None``)."""
    return None if t is None else t.isoformat()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def decision_words(d: DecisionRow) -> str:
    """A decision as a scientist would describe it: which planner, how many points, what
    it expected.

    Args:
        d: The decision row.

    Returns:
        One or two sentences.
    """
    details = dict(d.details or {})
    points = _plural(d.n_proposed, "new point")
    basis = f"from {_plural(d.n_train, 'finished experiment')}"
    if d.n_pending:
        basis += f", knowing {d.n_pending} more still running"
    text = f"The {d.planner} planner (v{d.version}) proposed {points} {basis}."
    phase = details.get("phase")
    if phase == "initial_design":
        n_init = details.get("initial_points")
        of = f" of {n_init}" if isinstance(n_init, int) else ""
        text += (
            f" It is still in its initial space-filling design{of} points (scrambled Sobol), "
            "so it expected nothing in particular yet."
        )
    elif phase == "bayesopt":
        best = details.get("best_observed")
        fit = details.get("n_feasible", d.n_train)
        text += f" It fitted a Gaussian-process model to {_plural(int(fit), 'result')}"
        if isinstance(best, int | float):
            text += f" (best so far {best:.4g})"
        text += " and chose the points with the highest expected improvement"
        if d.candidate_scores:
            top = max(float(v) for v in d.candidate_scores)
            text += f" (log expected improvement of the best point: {top:.3g})"
        text += "."
    elif d.planner == "alab":
        text += _alab_words(details)
    elif d.planner in PLANNER_WORDS:
        text += f" It {PLANNER_WORDS[d.planner]}, so it expected no particular outcome."
    elif d.candidate_scores:
        top = max(float(v) for v in d.candidate_scores)
        text += f" The best candidate scored {top:.4g}."
    text += f" Deciding took {d.seconds:.2f} s."
    return text


def _alab_words(details: dict[str, Any]) -> str:
    """The recipes an ``alab`` decision chose and why, or why the campaign is done."""
    if details.get("finished"):
        return f" Nothing is left to try: {details['finished']}."
    parts = []
    for prop in list(details.get("proposals") or [])[:3]:
        try:
            text = (
                f"{prop['target']} from {prop['precursors']} at {float(prop['temperature_c']):g}"
                f" °C ({str(prop['origin']).replace('_', ' ')}"
            )
            left = prop.get("remaining_driving_force_ev_per_atom")
            if isinstance(left, int | float):
                via = ", ".join(prop.get("predicted_intermediates") or []) or "no intermediate"
                text += f"; {left:.3f} eV/atom left to the target via {via}"
            parts.append(text + ")")
        except (KeyError, TypeError, ValueError):
            continue
    more = len(details.get("proposals") or []) - len(parts)
    if not parts:
        return " It chose no recipe now (the rest are running)."
    return " It chose " + "; ".join(parts) + (f"; and {more} more" if more > 0 else "") + "."


def decision_view(d: DecisionRow) -> dict[str, Any]:
    """One decision as JSON, with its description in words."""
    return {
        "id": d.id,
        "planner": d.planner,
        "version": d.version,
        "seed": d.seed,
        "n_train": d.n_train,
        "n_pending": d.n_pending,
        "n_proposed": d.n_proposed,
        "candidate_scores": list(d.candidate_scores or []),
        "details": dict(d.details or {}),
        "seconds": d.seconds,
        "created_at": iso(d.created_at),
        "summary": decision_words(d),
    }


def last_decision(s: Session, campaign_id: int) -> DecisionRow | None:
    """The campaign's most recent planner decision."""
    return s.scalars(
        select(DecisionRow)
        .where(DecisionRow.campaign_id == campaign_id)
        .order_by(DecisionRow.id.desc())
        .limit(1)
    ).first()


CONTROLLER_LOST = "CONTROLLER LOST"
"""What a RUNNING or PAUSED campaign reads when no live controller holds its lease."""

DRIVEN = frozenset({CampaignStatus.RUNNING, CampaignStatus.PAUSED})
"""Statuses in which a campaign needs a live controller."""


def is_controller_lost(status: CampaignStatus, controller: dict[str, Any] | None) -> bool:
    """Whether a campaign that should be driven has no live controller (lease expired or
    given back without the campaign finishing)."""
    return status in DRIVEN and (controller is None or not controller["live"])


def campaign_view(s: Session, c: CampaignRow) -> dict[str, Any]:
    """A campaign's summary: status, budget, counts per experiment status.

    ``controller_lost`` is derived: the campaign is RUNNING or PAUSED but no controller
    renews its lease; ``display_status`` is then ``CONTROLLER LOST`` (else the status).
    """
    counts = {k.value: v for k, v in count_by_status(s, c.id).items()}
    spec = dict(c.spec)
    controller = controller_view(s, c.id)
    lost = is_controller_lost(c.status, controller)
    return {
        "id": c.id,
        "name": c.name,
        "status": c.status.value,
        "display_status": CONTROLLER_LOST if lost else c.status.value,
        "controller_lost": lost,
        "description": spec.get("campaign", {}).get("description", ""),
        "planner": spec.get("planner", {}).get("name"),
        "objectives": [
            {"name": o["name"], "direction": o.get("direction", "maximize")}
            for o in spec.get("objectives", [])
        ],
        "parameters": [p["name"] for p in spec.get("parameters", [])],
        "require_approval": bool(spec.get("safety", {}).get("require_approval", False)),
        "budget": c.max_experiments,
        "seed": c.seed,
        "counts": counts,
        "completed": counts.get(ExperimentStatus.COMPLETED.value, 0),
        "created_at": iso(c.created_at),
        "updated_at": iso(c.updated_at),
        "controller": controller,
    }


def controller_view(s: Session, campaign_id: int) -> dict[str, Any] | None:
    """The controller holding the campaign's lease (host, process, renewal), or ``None``.

    ``live`` is false for a lease its controller stopped renewing (it crashed or was cut
    off): the campaign may then be started again.
    """
    row = lease_of(s, campaign_id)
    if row is None:
        return None
    return {
        "host": row.host,
        "pid": row.pid,
        "acquired_at": iso(row.acquired_at),
        "renewed_at": iso(row.renewed_at),
        "expires_at": iso(row.expires_at),
        "live": lease_is_live(row),
    }


def instrument_view(row: InstrumentRow, quiet_after_s: float) -> dict[str, Any]:
    """An instrument's health: state, service, last heartbeat and whether it went quiet."""
    silent_s = None if row.last_seen_at is None else (utcnow() - row.last_seen_at).total_seconds()
    return {
        "name": row.name,
        "kind": row.kind,
        "address": row.address,
        "state": row.state.value,
        "in_service": row.in_service,
        "consecutive_faults": row.consecutive_faults,
        "reason": row.reason,
        "driver": row.driver,
        "last_seen_at": iso(row.last_seen_at),
        "silent_s": silent_s,
        "quiet": silent_s is None or silent_s > quiet_after_s,
    }


def experiment_view(e: ExperimentRow) -> dict[str, Any]:
    """An experiment's row in the experiments table (no steps)."""
    return {
        "id": e.id,
        "campaign_id": e.campaign_id,
        "status": e.status.value,
        "parameters": dict(e.parameters),
        "decision_id": e.decision_id,
        "origin": e.origin,
        "score": e.score,
        "reason": e.reason,
        "created_at": iso(e.created_at),
        "started_at": iso(e.started_at),
        "finished_at": iso(e.finished_at),
        "waiting_for": e.waiting_for,
    }


def sample_view(r: SampleRow) -> dict[str, Any]:
    """A sample: its container, where it is and what became of it."""
    return {
        "id": r.id,
        "experiment_id": r.experiment_id,
        "label": r.label,
        "container": r.container,
        "location": r.location,
        "state": r.state.value,
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
    }


def experiment_detail(s: Session, e: ExperimentRow) -> dict[str, Any]:
    """An experiment with its steps, measurements and the planner decision behind it."""
    out = experiment_view(e)
    out["steps"] = [
        {
            "id": st.id,
            "index": st.index,
            "attempt": st.attempt,
            "rerun": st.rerun,
            "kind": st.kind,
            "action": st.action,
            "instrument": st.instrument,
            "request_id": st.request_id,
            "status": st.status.value,
            "parameters": dict(st.parameters),
            "error": st.error,
            "queued_at": iso(st.queued_at),
            "sent_at": iso(st.sent_at),
            "started_at": iso(st.started_at),
            "finished_at": iso(st.finished_at),
        }
        for st in e.steps
    ]
    out["measurements"] = [
        {
            "id": m.id,
            "step_id": m.step_id,
            "name": m.name,
            "value": m.value,
            "uncertainty": m.uncertainty,
            "unit": m.unit,
            "shape": m.shape,
            "array": m.array,
        }
        for m in e.measurements
    ]
    decision = s.get(DecisionRow, e.decision_id) if e.decision_id is not None else None
    out["decision"] = decision_view(decision) if decision is not None else None
    return out


def event_view(ev: EventRow) -> dict[str, Any]:
    """An audit-log entry."""
    return {
        "id": ev.id,
        "campaign_id": ev.campaign_id,
        "experiment_id": ev.experiment_id,
        "instrument": ev.instrument,
        "kind": ev.kind,
        "message": ev.message,
        "data": dict(ev.data or {}),
        "actor": ev.actor,
        "created_at": iso(ev.created_at),
    }


def command_view(c: CommandRow) -> dict[str, Any]:
    """An operator command and what became of it."""
    return {
        "id": c.id,
        "campaign_id": c.campaign_id,
        "command": c.command,
        "args": dict(c.args or {}),
        "actor": c.actor,
        "status": c.status.value,
        "result": c.result,
        "created_at": iso(c.created_at),
        "applied_at": iso(c.applied_at),
    }
