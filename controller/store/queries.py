"""Read models of the experiment store: what planners, the dashboard and exports need.

Like :mod:`controller.store.repo`, every function receives a session. Queries run a fixed
number of statements whatever the number of experiments (no per-experiment queries), and
select plain columns where no ORM object is needed, so they stay fast for campaigns of tens
of thousands of experiments.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from models.errors import InvalidCampaignError, StoreError
from models.objectives import Objective
from models.records import Observation
from models.status import FINISHED_EXPERIMENT, PENDING_EXPERIMENT, ExperimentStatus, StepStatus
from models.tables import (
    CampaignRow,
    DecisionRow,
    EventRow,
    ExperimentRow,
    MeasurementRow,
    SampleRow,
    StepRow,
)

logger = logging.getLogger(__name__)

DEFAULT_EVENT_LIMIT = 1000
"""How many events :func:`events` returns at most by default."""


def _values(statuses: Iterable[ExperimentStatus | StepStatus]) -> list[str]:
    return [st.value for st in statuses]


def experiments_in_status(
    s: Session, campaign_id: int, statuses: Iterable[ExperimentStatus]
) -> list[ExperimentRow]:
    """The campaign's experiments whose status is one of ``statuses``, by id."""
    stmt = (
        select(ExperimentRow)
        .where(
            ExperimentRow.campaign_id == campaign_id,
            ExperimentRow.status.in_(_values(statuses)),
        )
        .order_by(ExperimentRow.id)
    )
    return list(s.scalars(stmt))


def steps_in_status(s: Session, campaign_id: int, statuses: Iterable[StepStatus]) -> list[StepRow]:
    """The campaign's steps (of all its experiments) whose status is one of ``statuses``, by id."""
    stmt = (
        select(StepRow)
        .join(ExperimentRow, StepRow.experiment_id == ExperimentRow.id)
        .where(ExperimentRow.campaign_id == campaign_id, StepRow.status.in_(_values(statuses)))
        .order_by(StepRow.id)
    )
    return list(s.scalars(stmt))


def _latest_values(
    s: Session,
    where: Sequence[ColumnElement[bool]],
    names: Sequence[str],
    column: InstrumentedAttribute[float | None] = MeasurementRow.value,
) -> dict[int, dict[str, float]]:
    """Scalar measurement values (or another column of them, e.g. their uncertainty) by
    experiment id and name; the latest step's value wins."""
    out: dict[int, dict[str, float]] = {}
    if not names:
        return out
    stmt = (
        select(MeasurementRow.experiment_id, MeasurementRow.name, column)
        .join(ExperimentRow, MeasurementRow.experiment_id == ExperimentRow.id)
        .where(*where, MeasurementRow.name.in_(list(names)), column.is_not(None))
        .order_by(MeasurementRow.step_id, MeasurementRow.id)
    )
    for experiment_id, name, value in s.execute(stmt):
        if value is not None:
            out.setdefault(experiment_id, {})[name] = value
    return out


KNOWN_STATUSES = FINISHED_EXPERIMENT
"""Statuses of experiments a planner may know (see :func:`learns_from`)."""


def learns_from(status: ExperimentStatus, *, infeasible: bool = False) -> bool:
    """Whether an experiment moving to ``status`` becomes part of what the planner knows.

    The rule, the same for the live loop and for a planner rebuilt after a restart: a
    COMPLETED or FAILED experiment is known; an ABANDONED one only when it was abandoned
    *as infeasible* (``infeasible``: refused by the safety gate or rejected by an
    operator), not when it was abandoned for a reason unrelated to the point (cost budget,
    a stopping or aborted campaign).
    """
    if status in (ExperimentStatus.COMPLETED, ExperimentStatus.FAILED):
        return True
    return status is ExperimentStatus.ABANDONED and infeasible


def next_known_seq(s: Session, campaign_id: int) -> int:
    """The ``known_seq`` the campaign's next known experiment gets (1 for the first)."""
    stmt = select(func.coalesce(func.max(ExperimentRow.known_seq), 0)).where(
        ExperimentRow.campaign_id == campaign_id
    )
    return int(s.scalar(stmt) or 0) + 1


def observations(
    s: Session, campaign_id: int, objectives: Sequence[Objective]
) -> list[Observation]:
    """What a planner learns from: every experiment it knows, in the order it learned them.

    See :func:`known_observations` (this is all of them, from the first).
    """
    return known_observations(s, campaign_id, objectives)[0]


def known_observations(
    s: Session, campaign_id: int, objectives: Sequence[Objective], *, after: int = 0
) -> tuple[list[Observation], int]:
    """What the planner knows of a campaign: the one definition, live and after a restart.

    An experiment is known once its row has a ``known_seq`` (given by the store when it
    becomes COMPLETED or FAILED, or ABANDONED as infeasible; see :func:`learns_from`), and
    the planner learns them in ``known_seq`` order. The live controller teaches its planner
    by reading this function (everything after what it already taught) before every ask, and
    a planner rebuilt from the store reads it from the start, so both hold the same
    observations in the same order and derive the same decision seeds
    (:meth:`planners.base.Planner.decision_seed`).

    A COMPLETED experiment is feasible and carries each objective's value, taken from the
    measurement of that name (of the latest step that measured it). A FAILED or ABANDONED
    experiment is infeasible with no objective values. Each carries every scalar measurement
    of its completed steps in ``measurements`` (the latest step's value of each name). A
    COMPLETED experiment that lacks an objective's measurement (an instrument that did not
    report it) is returned infeasible with the values it has, and a warning is logged.

    Args:
        s: The session.
        campaign_id: The campaign.
        objectives: The campaign's objectives.
        after: Only experiments with a larger ``known_seq`` (the last one already taught).

    Returns:
        The observations in ``known_seq`` order, and the largest ``known_seq`` among them
        (``after`` when there is none).
    """
    names = [o.name for o in objectives]
    completed = ExperimentStatus.COMPLETED.value
    known = [
        ExperimentRow.campaign_id == campaign_id,
        ExperimentRow.known_seq.is_not(None),
        ExperimentRow.known_seq > after,
    ]
    stmt = (
        select(
            ExperimentRow.id,
            ExperimentRow.status,
            ExperimentRow.parameters,
            ExperimentRow.known_seq,
        )
        .where(*known, ExperimentRow.status.in_(_values(KNOWN_STATUSES)))
        .order_by(ExperimentRow.known_seq, ExperimentRow.id)
    )
    rows = s.execute(stmt).all()
    if not rows:
        return [], after
    where = [*known, ExperimentRow.status == completed]
    values = _latest_values(s, where, names)
    sigmas = _latest_values(s, where, names, MeasurementRow.uncertainty)
    scalars = _all_scalars(s, campaign_id, after)
    out: list[Observation] = []
    for experiment_id, status, parameters, _ in rows:
        if status != completed:
            out.append(
                Observation(
                    dict(parameters),
                    {},
                    False,
                    experiment_id,
                    measurements=scalars.get(experiment_id, {}),
                )
            )
            continue
        measured = values.get(experiment_id, {})
        missing = [n for n in names if n not in measured]
        if missing:
            logger.warning(
                "campaign %s: experiment %s is COMPLETED but has no measurement of %s; "
                "treating it as infeasible",
                campaign_id,
                experiment_id,
                ", ".join(missing),
            )
        objs = {n: measured[n] for n in names if n in measured}
        sigma = {n: u for n, u in sigmas.get(experiment_id, {}).items() if n in objs}
        out.append(
            Observation(
                dict(parameters),
                objs,
                not missing,
                experiment_id,
                sigma,
                scalars.get(experiment_id, {}),
            )
        )
    return out, int(rows[-1][3])


def _all_scalars(s: Session, campaign_id: int, after: int = 0) -> dict[int, dict[str, float]]:
    """Every scalar measurement of the campaign's known experiments with a ``known_seq``
    after ``after``, by experiment id and name (the latest step's value of each name)."""
    stmt = (
        select(MeasurementRow.experiment_id, MeasurementRow.name, MeasurementRow.value)
        .join(ExperimentRow, MeasurementRow.experiment_id == ExperimentRow.id)
        .where(
            ExperimentRow.campaign_id == campaign_id,
            ExperimentRow.known_seq.is_not(None),
            ExperimentRow.known_seq > after,
            ExperimentRow.status.in_(_values(KNOWN_STATUSES)),
            MeasurementRow.value.is_not(None),
        )
        .order_by(MeasurementRow.step_id, MeasurementRow.id)
    )
    out: dict[int, dict[str, float]] = {}
    for experiment_id, name, value in s.execute(stmt):
        if value is not None:
            out.setdefault(experiment_id, {})[name] = float(value)
    return out


def pending_parameters(s: Session, campaign_id: int) -> list[dict[str, Any]]:
    """Parameters of the campaign's PROPOSED, QUEUED, RUNNING and INTERRUPTED experiments."""
    stmt = (
        select(ExperimentRow.parameters)
        .where(
            ExperimentRow.campaign_id == campaign_id,
            ExperimentRow.status.in_(_values(PENDING_EXPERIMENT)),
        )
        .order_by(ExperimentRow.id)
    )
    return [dict(p) for p in s.scalars(stmt)]


COST_KEY = "experiment_costs"
"""Key of a decision's ``details`` under which the controller records the cost of each
proposal (a list in proposal order, ``None`` where none is known); see
:mod:`controller.costs`."""


def recorded_cost(details: Any, proposal_index: int) -> float | None:
    """The cost the controller recorded for proposal ``proposal_index`` of a decision."""
    if not isinstance(details, dict):
        return None
    costs = details.get(COST_KEY)
    if not isinstance(costs, list) or not 0 <= proposal_index < len(costs):
        return None
    value = costs[proposal_index]
    return float(value) if isinstance(value, (int, float)) else None


def experiment_costs(s: Session, campaign_id: int) -> dict[int, tuple[ExperimentStatus, float]]:
    """The status and recorded cost of each of the campaign's experiments that has one.

    The cost spent is recomputed from these after a restart: nothing about it lives only
    in the controller's memory.
    """
    stmt = (
        select(
            ExperimentRow.id,
            ExperimentRow.status,
            ExperimentRow.proposal_index,
            DecisionRow.details,
        )
        .join(DecisionRow, ExperimentRow.decision_id == DecisionRow.id)
        .where(ExperimentRow.campaign_id == campaign_id)
    )
    out: dict[int, tuple[ExperimentStatus, float]] = {}
    for eid, status, index, details in s.execute(stmt):
        cost = recorded_cost(details, index)
        if cost is not None:
            out[int(eid)] = (ExperimentStatus(status), cost)
    return out


def cost_spent(s: Session, campaign_id: int) -> float:
    """Sum of the recorded costs of the campaign's COMPLETED and pending experiments
    (PROPOSED, QUEUED, RUNNING, INTERRUPTED): what ``budget.max_cost`` is checked against."""
    counted = {ExperimentStatus.COMPLETED, *PENDING_EXPERIMENT}
    return sum(c for st, c in experiment_costs(s, campaign_id).values() if st in counted)


def count_by_status(s: Session, campaign_id: int) -> dict[ExperimentStatus, int]:
    """Number of the campaign's experiments in each status (every status present, maybe 0)."""
    counts = dict.fromkeys(ExperimentStatus, 0)
    stmt = (
        select(ExperimentRow.status, func.count())
        .where(ExperimentRow.campaign_id == campaign_id)
        .group_by(ExperimentRow.status)
    )
    for status, n in s.execute(stmt):
        counts[ExperimentStatus(status)] = int(n)
    return counts


def events(
    s: Session,
    campaign_id: int | None,
    *,
    since_id: int = 0,
    limit: int = DEFAULT_EVENT_LIMIT,
) -> list[EventRow]:
    """Audit-log entries after ``since_id``, oldest first.

    Args:
        s: The session.
        campaign_id: The campaign's events only; ``None`` for every event.
        since_id: Return events with a larger id (the last id a reader has seen).
        limit: At most this many.
    """
    stmt = select(EventRow).where(EventRow.id > since_id)
    if campaign_id is not None:
        stmt = stmt.where(EventRow.campaign_id == campaign_id)
    return list(s.scalars(stmt.order_by(EventRow.id).limit(limit)))


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _spec_names(spec: dict[str, Any], key: str) -> list[str]:
    return [str(item["name"]) for item in spec.get(key, []) if "name" in item]


def _union(lists: Iterable[list[str]]) -> list[str]:
    return list(dict.fromkeys(name for names in lists for name in names))


def export_rows(s: Session, campaign_name: str | None) -> list[dict[str, Any]]:
    """One flat row per experiment, for CSV/Parquet export.

    Every row has the same keys, in this order: ``id``, ``campaign``, ``status``,
    ``param.<name>`` for each parameter, ``obj.<name>`` for each objective (the measured
    value or ``None``), ``planner``, ``decision_id``, ``instruments`` (the distinct
    instruments of its steps, comma-joined in order of first use), ``created_at``,
    ``started_at``, ``finished_at`` (ISO-8601 UTC or ``None``), ``attempts`` (number of
    steps, re-runs included), ``rerun`` (whether any step was re-run), ``cost`` (the
    experiment's recorded cost, ``None`` when no step declares one), ``sample``,
    ``sample_state`` and ``sample_location`` (its sample's label, state and where it is;
    ``None`` when it has none) and ``waiting_for`` (what it waits for, if it waits). Parameters and
    objectives come from the campaign specs; exporting several campaigns gives the union of
    their columns, ``None`` where one does not apply.

    Args:
        s: The session.
        campaign_name: The campaign to export; ``None`` exports every campaign.

    Returns:
        The rows, ordered by experiment id.

    Raises:
        StoreError: If no campaign has that name.
    """
    cstmt = select(CampaignRow.id, CampaignRow.name, CampaignRow.spec).order_by(CampaignRow.id)
    if campaign_name is not None:
        cstmt = cstmt.where(CampaignRow.name == campaign_name)
    campaigns = s.execute(cstmt).all()
    if campaign_name is not None and not campaigns:
        raise StoreError(f"no campaign named {campaign_name!r}")
    names = {cid: name for cid, name, _ in campaigns}
    param_cols = _union(_spec_names(spec, "parameters") for _, _, spec in campaigns)
    obj_cols = _union(_spec_names(spec, "objectives") for _, _, spec in campaigns)
    where: list[ColumnElement[bool]] = []
    if campaign_name is not None:
        where.append(ExperimentRow.campaign_id == campaigns[0][0])

    instruments: dict[int, list[str]] = {}
    attempts: dict[int, int] = {}
    reruns: set[int] = set()
    sstmt = (
        select(StepRow.experiment_id, StepRow.instrument, StepRow.rerun)
        .join(ExperimentRow, StepRow.experiment_id == ExperimentRow.id)
        .where(*where)
        .order_by(StepRow.id)
    )
    for experiment_id, instrument, rerun in s.execute(sstmt):
        attempts[experiment_id] = attempts.get(experiment_id, 0) + 1
        used = instruments.setdefault(experiment_id, [])
        if instrument is not None and instrument not in used:
            used.append(instrument)
        if rerun:
            reruns.add(experiment_id)
    values = _latest_values(s, where, obj_cols)
    samples: dict[int, tuple[str | None, str | None, str | None]] = {}
    smt = select(SampleRow.experiment_id, SampleRow.label, SampleRow.state, SampleRow.location)
    if campaign_name is not None:
        smt = smt.where(SampleRow.campaign_id == campaigns[0][0])
    for sample_exp, label, sstate, location in s.execute(smt):
        samples[sample_exp] = (label, str(getattr(sstate, "value", sstate)), location)

    estmt = (
        select(
            ExperimentRow.id,
            ExperimentRow.campaign_id,
            ExperimentRow.status,
            ExperimentRow.parameters,
            ExperimentRow.decision_id,
            DecisionRow.planner,
            ExperimentRow.created_at,
            ExperimentRow.started_at,
            ExperimentRow.finished_at,
            ExperimentRow.proposal_index,
            DecisionRow.details,
            ExperimentRow.waiting_for,
        )
        .outerjoin(DecisionRow, ExperimentRow.decision_id == DecisionRow.id)
        .where(*where)
        .order_by(ExperimentRow.id)
    )
    rows: list[dict[str, Any]] = []
    for (
        eid,
        cid,
        status,
        params,
        decision_id,
        planner,
        created,
        started,
        finished,
        index,
        details,
        waiting_for,
    ) in s.execute(estmt):
        row: dict[str, Any] = {
            "id": eid,
            "campaign": names[cid],
            "status": ExperimentStatus(status).value,
        }
        row.update({f"param.{n}": params.get(n) for n in param_cols})
        measured = values.get(eid, {})
        row.update({f"obj.{n}": measured.get(n) for n in obj_cols})
        row.update(
            planner=planner,
            decision_id=decision_id,
            instruments=",".join(instruments.get(eid, [])),
            created_at=_iso(created),
            started_at=_iso(started),
            finished_at=_iso(finished),
            attempts=attempts.get(eid, 0),
            rerun=eid in reruns,
            cost=recorded_cost(details, index),
        )
        sample, sample_state, sample_location = samples.get(eid, (None, None, None))
        row.update(
            sample=sample,
            sample_state=sample_state,
            sample_location=sample_location,
            waiting_for=waiting_for,
        )
        rows.append(row)
    return rows


def related_observations(
    s: Session, names: Sequence[str], objectives: Sequence[Objective]
) -> dict[str, list[Observation]]:
    """What each named campaign measured, as a planner learns it from a related task.

    Args:
        s: An open session.
        names: Campaign names (``planner.options.related_campaigns``).
        objectives: The objectives to read (this campaign's).

    Returns:
        Each campaign's observations, by name, in the order named.

    Raises:
        InvalidCampaignError: If a named campaign is not in the store (key
            ``planner.options.related_campaigns``).
    """
    out: dict[str, list[Observation]] = {}
    for name in names:
        row = s.scalars(select(CampaignRow).where(CampaignRow.name == name)).first()
        if row is None:
            raise InvalidCampaignError(
                None,
                [("planner.options.related_campaigns", f"no campaign {name!r} in the store")],
            )
        out[name] = observations(s, row.id, list(objectives))
    return out
