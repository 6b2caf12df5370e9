"""The data behind the campaign page's charts, computed from the store in a few queries.

* best-so-far: each objective's best value after each completed experiment, in the order
  they finished;
* parameter space: every finished experiment's parameters and objective values (the page
  draws a scatter for two parameters, parallel coordinates for more);
* Pareto front of the first two objectives of a multi-objective campaign (the
  non-dominated completed experiments);
* phase map: for campaigns that measure a ``phase`` label (active-learning phase mapping,
  as in SARA), the label over the first two parameters;
* instrument timeline: every step as a bar on its instrument's row, with each
  instrument's busy fraction, so idle time shows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.api.views import iso
from models.status import ExperimentStatus
from models.tables import CampaignRow, ExperimentRow, MeasurementRow, StepRow, utcnow

logger = logging.getLogger(__name__)

PHASE_MEASUREMENT = "phase"
"""A measurement of this name marks a phase-mapping campaign and is drawn as a phase map."""

MAX_POINTS = 20_000
"""At most this many experiments (the latest) are sent to the page's charts."""


def _values(s: Session, campaign_id: int) -> dict[int, dict[str, Any]]:
    """Measured scalar values (and ``phase`` labels) by experiment and name."""
    stmt = (
        select(
            MeasurementRow.experiment_id,
            MeasurementRow.name,
            MeasurementRow.value,
            MeasurementRow.array,
        )
        .join(ExperimentRow, MeasurementRow.experiment_id == ExperimentRow.id)
        .where(ExperimentRow.campaign_id == campaign_id)
        .order_by(MeasurementRow.step_id, MeasurementRow.id)
    )
    out: dict[int, dict[str, Any]] = {}
    for eid, name, value, array in s.execute(stmt):
        if value is not None:
            out.setdefault(eid, {})[name] = value
        elif name == PHASE_MEASUREMENT and isinstance(array, list) and array:
            out.setdefault(eid, {})[name] = array[0]
    return out


def pareto_front(points: Sequence[tuple[float, float]], signs: tuple[float, float]) -> list[int]:
    """Indices of the non-dominated points, ordered by the first objective.

    Args:
        points: ``(f1, f2)`` per point.
        signs: ``+1`` for an objective to maximise, ``-1`` to minimise.

    Returns:
        Indices into ``points`` of those no other point beats on both objectives.
    """
    scored = [(signs[0] * a, signs[1] * b) for a, b in points]
    front = [
        i
        for i, (a, b) in enumerate(scored)
        if not any(
            (c >= a and d >= b) and (c > a or d > b) for j, (c, d) in enumerate(scored) if j != i
        )
    ]
    return sorted(front, key=lambda i: points[i][0])


def best_so_far(
    values: Sequence[float | None], sign: float, target: float | None = None
) -> list[float | None]:
    """The running best of ``values`` (``None`` until the first value): the largest of
    ``sign * v``, or with a ``target`` the value closest to it."""
    out: list[float | None] = []
    best: float | None = None

    def utility(v: float) -> float:
        return -abs(v - target) if target is not None else sign * v

    for v in values:
        if v is not None and (best is None or utility(v) > utility(best)):
            best = v
        out.append(best)
    return out


def _timeline(s: Session, campaign_id: int) -> dict[str, Any]:
    stmt = (
        select(
            StepRow.id,
            StepRow.experiment_id,
            StepRow.instrument,
            StepRow.action,
            StepRow.status,
            StepRow.sent_at,
            StepRow.started_at,
            StepRow.finished_at,
        )
        .join(ExperimentRow, StepRow.experiment_id == ExperimentRow.id)
        .where(ExperimentRow.campaign_id == campaign_id, StepRow.instrument.is_not(None))
        .order_by(StepRow.id)
    )
    now = utcnow()
    bars: list[dict[str, Any]] = []
    spans: dict[str, list[tuple[float, float]]] = {}
    for sid, eid, inst, action, status, sent, started, finished in s.execute(stmt):
        start = started or sent
        if start is None or inst is None:
            continue
        end = finished or now
        if end < start:
            end = start
        bars.append(
            {
                "step_id": sid,
                "experiment_id": eid,
                "instrument": inst,
                "action": action,
                "status": str(getattr(status, "value", status)),
                "start": iso(start),
                "end": iso(end),
                "duration_s": (end - start).total_seconds(),
            }
        )
        spans.setdefault(inst, []).append((start.timestamp(), end.timestamp()))
    busy: dict[str, float] = {}
    for inst, intervals in spans.items():
        lo = min(a for a, _ in intervals)
        hi = max(b for _, b in intervals)
        covered, last_end = 0.0, lo
        for a, b in sorted(intervals):
            a = max(a, last_end)
            if b > a:
                covered += b - a
                last_end = b
        busy[inst] = covered / (hi - lo) if hi > lo else 1.0
    return {"bars": bars, "busy_fraction": busy}


def chart_data(s: Session, c: CampaignRow) -> dict[str, Any]:
    """Everything the campaign page draws, as JSON-ready data."""
    spec = dict(c.spec)
    objectives = [  # outcome constraints are not optimised: no best-so-far, no front
        (o["name"], 1.0 if o.get("direction") in (None, "maximize") else -1.0)
        for o in spec.get("objectives", [])
        if o.get("kind", "objective") != "constraint"
    ]
    targets = {o["name"]: o.get("target") for o in spec.get("objectives", [])}
    params = [p["name"] for p in spec.get("parameters", [])]
    values = _values(s, c.id)
    rows = s.execute(
        select(
            ExperimentRow.id,
            ExperimentRow.status,
            ExperimentRow.parameters,
            ExperimentRow.finished_at,
        )
        .where(ExperimentRow.campaign_id == c.id)
        .order_by(ExperimentRow.id.desc())
        .limit(MAX_POINTS)
    ).all()[::-1]
    done = ExperimentStatus.COMPLETED.value
    completed = sorted(
        (r for r in rows if str(getattr(r[1], "value", r[1])) == done),
        key=lambda r: (r[3] is None, r[3] or utcnow(), r[0]),
    )
    best: dict[str, Any] = {}
    for name, sign in objectives:
        series = [values.get(r[0], {}).get(name) for r in completed]
        best[name] = {
            "experiment_ids": [r[0] for r in completed],
            "values": series,
            "best": best_so_far(series, sign, targets.get(name)),
            "direction": (
                f"target {targets[name]:g}"
                if targets.get(name) is not None
                else "maximize"
                if sign > 0
                else "minimize"
            ),
        }
    points = [
        {
            "id": r[0],
            "status": str(getattr(r[1], "value", r[1])),
            "parameters": dict(r[2]),
            "objectives": {n: values.get(r[0], {}).get(n) for n, _ in objectives},
        }
        for r in rows
        if r[0] in values or str(getattr(r[1], "value", r[1])) == done
    ]
    pareto: dict[str, Any] | None = None
    if len(objectives) >= 2:
        (n1, s1), (n2, s2) = objectives[:2]
        both = [
            (p["id"], p["objectives"][n1], p["objectives"][n2])
            for p in points
            if p["status"] == done
            and p["objectives"][n1] is not None
            and p["objectives"][n2] is not None
        ]
        front = pareto_front([(a, b) for _, a, b in both], (s1, s2))
        pareto = {
            "objectives": [n1, n2],
            "points": [{"id": i, n1: a, n2: b} for i, a, b in both],
            "front": [both[i][0] for i in front],
        }
    phase: dict[str, Any] | None = None
    labelled = [
        (r[0], dict(r[2]), values[r[0]][PHASE_MEASUREMENT])
        for r in rows
        if PHASE_MEASUREMENT in values.get(r[0], {})
    ]
    if labelled and len(params) >= 2:
        phase = {
            "x": params[0],
            "y": params[1],
            "points": [
                {"id": i, "x": p.get(params[0]), "y": p.get(params[1]), "phase": lab}
                for i, p, lab in labelled
            ],
        }
    return {
        "parameters": params,
        "objectives": [n for n, _ in objectives],
        "best_so_far": best,
        "points": points,
        "pareto": pareto,
        "phase_map": phase,
        "timeline": _timeline(s, c.id),
    }
