"""Reads and writes of the experiment store.

Every function receives a :class:`~sqlalchemy.orm.Session` and never opens, commits or
closes one: the caller decides the transaction (``with transaction(factory) as s: ...``).
Functions that add rows flush, so the returned rows carry their ids. Status changes go
through :func:`models.status.transition` and leave an entry in the ``events`` audit log.

The read models that planners, the dashboard and ``sdlab export`` need
(:func:`observations`, :func:`pending_parameters`, :func:`count_by_status`,
:func:`export_rows`) live in :mod:`controller.store.queries` and are re-exported here.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.store.lab import lab_priority
from controller.store.queries import (
    count_by_status,
    events,
    experiments_in_status,
    export_rows,
    observations,
    pending_parameters,
    steps_in_status,
)
from models.campaign import CampaignSpec
from models.errors import StoreError
from models.params import ParamValue
from models.records import Decision, Measurement
from models.status import (
    FINISHED_STEP,
    CampaignStatus,
    ExperimentStatus,
    StepStatus,
    transition,
)
from models.tables import (
    CampaignRow,
    DecisionRow,
    EventRow,
    ExperimentRow,
    MeasurementRow,
    StepRow,
    utcnow,
)

__all__ = [
    "add_decision",
    "add_event",
    "add_experiment",
    "add_measurements",
    "add_step",
    "count_by_status",
    "create_campaign",
    "events",
    "experiments_in_status",
    "export_rows",
    "get_campaign",
    "list_campaigns",
    "observations",
    "pending_parameters",
    "set_campaign_status",
    "set_experiment_status",
    "set_step_status",
    "steps_in_status",
]

logger = logging.getLogger(__name__)


ROUTINE_MOVES = frozenset(
    {
        (ExperimentStatus.PROPOSED, ExperimentStatus.QUEUED),
        (ExperimentStatus.QUEUED, ExperimentStatus.RUNNING),
        (ExperimentStatus.RUNNING, ExperimentStatus.COMPLETED),
    }
)
"""Experiment moves the audit log leaves to the row's timestamps."""


# --------------------------------------------------------------------------- campaigns


def create_campaign(
    s: Session,
    spec: CampaignSpec,
    *,
    seed: int,
    max_experiments: int,
    source: str | None = None,
    actor: str = "controller",
) -> CampaignRow:
    """Record a new campaign in status CREATED.

    Args:
        s: The session.
        spec: The validated campaign file; stored as JSON with its hash.
        seed: The seed the campaign runs with (the file's, or a command-line override).
        max_experiments: The budget of completed experiments.
        source: Where the spec came from (the campaign file), for the event log.
        actor: Who created it.

    Returns:
        The new row, flushed (its ``id`` and ``uid`` are set).

    Raises:
        StoreError: If a campaign of that name exists already (the database's unique
            constraint backs this up against concurrent writers).
    """
    name = spec.campaign.name
    if get_campaign(s, name) is not None:
        raise StoreError(f"a campaign named {name!r} exists already")
    row = CampaignRow(
        uid=uuid.uuid4().hex,
        name=name,
        status=CampaignStatus.CREATED,
        spec=spec.model_dump(mode="json"),
        spec_hash=spec.spec_hash(),
        max_experiments=max_experiments,
        seed=seed,
        priority=lab_priority(s, spec.lab.name) if spec.lab is not None else 0,
    )
    s.add(row)
    s.flush()
    origin = f" from {source}" if source else ""
    add_event(
        s,
        "campaign.created",
        f"campaign {name} created{origin} (budget {max_experiments}, seed {seed})",
        campaign_id=row.id,
        data={"uid": row.uid, "spec_hash": row.spec_hash, "seed": seed, "source": source},
        actor=actor,
    )
    return row


def get_campaign(s: Session, name: str) -> CampaignRow | None:
    """The campaign called ``name``, or ``None``."""
    return s.scalars(select(CampaignRow).where(CampaignRow.name == name)).one_or_none()


def list_campaigns(s: Session) -> list[CampaignRow]:
    """Every campaign, oldest first."""
    return list(s.scalars(select(CampaignRow).order_by(CampaignRow.id)))


def set_campaign_status(
    s: Session,
    campaign: CampaignRow,
    target: CampaignStatus,
    *,
    actor: str = "controller",
    reason: str | None = None,
) -> None:
    """Move a campaign to ``target`` and log the event ``campaign.<target lower>``.

    Raises:
        IllegalTransitionError: If the lifecycle forbids the move; nothing is changed.
    """
    current = CampaignStatus(campaign.status)
    new = transition(current, target, f"campaign {campaign.name}")
    campaign.status = new
    add_event(
        s,
        f"campaign.{new.value.lower()}",
        _change_message(f"campaign {campaign.name}", current, new, reason),
        campaign_id=campaign.id,
        data={"from": current.value, "to": new.value, "reason": reason},
        actor=actor,
    )


# --------------------------------------------------------------------------- decisions


def add_decision(s: Session, campaign_id: int, decision: Decision) -> DecisionRow:
    """Record a planner decision (one ``ask``) with what is needed to replay it."""
    row = DecisionRow(
        campaign_id=campaign_id,
        planner=decision.planner,
        version=decision.version,
        seed=decision.seed,
        n_train=decision.n_train,
        n_pending=decision.n_pending,
        n_proposed=len(decision.proposals),
        candidate_scores=[float(v) for v in decision.candidate_scores],
        details=dict(decision.details),
        seconds=float(decision.seconds),
    )
    s.add(row)
    s.flush()
    return row


# --------------------------------------------------------------------------- experiments


def add_experiment(
    s: Session,
    campaign_id: int,
    parameters: Mapping[str, ParamValue],
    *,
    decision_id: int | None = None,
    proposal_index: int = 0,
    origin: str | None = None,
    score: float | None = None,
    status: ExperimentStatus = ExperimentStatus.PROPOSED,
) -> ExperimentRow:
    """Record an experiment before anything is dispatched for it.

    Args:
        s: The session.
        campaign_id: Its campaign.
        parameters: The value of every search-space parameter.
        decision_id: The planner decision that proposed it (``None`` for manual points).
        proposal_index: Its position among that decision's proposals.
        origin: Where the point came from (``"sobol"``, ``"acquisition"``, ...).
        score: The planner's score of the point.
        status: Initial status.

    Returns:
        The new row, flushed.
    """
    row = ExperimentRow(
        campaign_id=campaign_id,
        decision_id=decision_id,
        status=status,
        parameters=dict(parameters),
        proposal_index=proposal_index,
        origin=origin,
        score=None if score is None else float(score),
    )
    s.add(row)
    s.flush()
    return row


def set_experiment_status(
    s: Session,
    experiment: ExperimentRow,
    target: ExperimentStatus,
    *,
    reason: str | None = None,
    now: datetime | None = None,
    infeasible: bool = False,
    actor: str = "controller",
) -> None:
    """Move an experiment to ``target``: the write of
    :func:`controller.store.hot.move_experiment` (the controller's own), for a caller that
    holds the ORM row.

    ``started_at`` is set when the experiment first enters RUNNING; ``finished_at`` when it
    enters COMPLETED, FAILED or ABANDONED, and cleared when a failed or interrupted
    experiment is queued again. ``reason`` (when given) is kept on the row.

    The routine path (PROPOSED -> QUEUED -> RUNNING -> COMPLETED) is told by the row's
    own timestamps and its steps; every other move (failed, abandoned, interrupted, queued
    again) also appends the event ``experiment.<target lower>`` to the audit log.

    Args:
        s: The session.
        experiment: The experiment (its changed columns are read again on next access).
        target: The new status.
        reason: Why (shown to the operator), e.g. the error of the failed step.
        now: The time of the change (timezone-aware); the current UTC time by default.
        infeasible: An ABANDONED experiment is abandoned as infeasible (refused by the
            safety gate, rejected by an operator): the planner learns it (see
            :func:`controller.store.queries.learns_from`).
        actor: Who moved it (in the event).

    Raises:
        IllegalTransitionError: If the lifecycle forbids the move; nothing is changed.
    """
    from controller.store.hot import move_experiment  # hot imports this module

    s.flush()  # the row's pending changes first: the move is compare-and-set against them
    move_experiment(
        s,
        experiment.id,
        ExperimentStatus(experiment.status),
        target,
        reason=reason,
        infeasible=infeasible,
        campaign_id=experiment.campaign_id,
        actor=actor,
        now=now,
    )
    s.expire(experiment, ["status", "started_at", "finished_at", "reason", "known_seq"])


def experiment_event(
    s: Session,
    campaign_id: int,
    experiment_id: int,
    current: ExperimentStatus,
    new: ExperimentStatus,
    reason: str | None,
    *,
    actor: str = "controller",
) -> EventRow:
    """The event ``experiment.<new lower>`` of a move off the routine path."""
    return add_event(
        s,
        f"experiment.{new.value.lower()}",
        _change_message(f"experiment {experiment_id}", current, new, reason),
        campaign_id=campaign_id,
        experiment_id=experiment_id,
        data={"from": current.value, "to": new.value, "reason": reason},
        actor=actor,
    )


# --------------------------------------------------------------------------- steps


def add_step(
    s: Session,
    experiment: ExperimentRow,
    *,
    index: int,
    kind: str,
    action: str,
    parameters: Mapping[str, Any],
    request_id: str,
    attempt: int = 1,
    rerun: bool = False,
) -> StepRow:
    """Record an instrument step in status QUEUED, before it is sent.

    Args:
        s: The session.
        experiment: The experiment the step belongs to.
        index: Position of the step in the campaign's workflow.
        kind: Instrument kind that performs it.
        action: Action name.
        parameters: Parameters sent with the action.
        request_id: The id the instrument will see; unique across the store.
        attempt: 1 for the first try, one more for each re-run of the same step.
        rerun: Whether this step re-runs an interrupted one.

    Returns:
        The new row, flushed.

    Raises:
        sqlalchemy.exc.IntegrityError: If ``request_id`` or ``(experiment, index, attempt)``
            is taken (enforced by the database).
    """
    row = StepRow(
        experiment_id=experiment.id,
        index=index,
        attempt=attempt,
        rerun=rerun,
        kind=kind,
        action=action,
        request_id=request_id,
        status=StepStatus.QUEUED,
        parameters=dict(parameters),
    )
    s.add(row)
    s.flush()
    return row


def set_step_status(
    s: Session,
    step: StepRow,
    target: StepStatus,
    *,
    instrument: str | None = None,
    error: str | None = None,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
) -> None:
    """Move a step to ``target``.

    Entering RUNNING stamps ``sent_at`` (the controller's clock); ``started_at`` and
    ``finished_at`` are the instrument's times when it reports them. A step that ends
    without a reported ``finished_at`` gets the controller's current time.

    Args:
        s: The session.
        step: The step.
        target: The new status.
        instrument: The instrument it was sent to.
        error: What went wrong, for FAILED / INTERRUPTED / ABANDONED.
        started_at: When the instrument started it (timezone-aware).
        finished_at: When the instrument finished it (timezone-aware).

    Raises:
        IllegalTransitionError: If the lifecycle forbids the move; nothing is changed.
    """
    new = transition(StepStatus(step.status), target, f"step {step.request_id}")
    step.status = new
    if instrument is not None:
        step.instrument = instrument
    if error is not None:
        step.error = error
    if started_at is not None:
        step.started_at = started_at
    if finished_at is not None:
        step.finished_at = finished_at
    if new is StepStatus.RUNNING and step.sent_at is None:
        step.sent_at = utcnow()
    if new in FINISHED_STEP and step.finished_at is None:
        step.finished_at = utcnow()


def add_measurements(
    s: Session, step: StepRow, measurements: Sequence[Measurement]
) -> list[MeasurementRow]:
    """Record what a step measured.

    Arrays are stored as nested lists with their shape (computed by numpy).

    Returns:
        The new rows (not yet flushed), in the order given.

    Raises:
        StoreError: If an array is ragged (its rows differ in length).
    """
    rows = [
        MeasurementRow(**measurement_values(step.experiment_id, step.id, m)) for m in measurements
    ]
    s.add_all(rows)
    return rows


def measurement_values(experiment_id: int, step_id: int, m: Measurement) -> dict[str, Any]:
    """The column values of one measurement row (arrays as nested lists with their shape).

    Raises:
        StoreError: If an array is ragged (its rows differ in length).
    """
    array: list[Any] | None = None
    shape: list[int] | None = None
    if m.array is not None:
        try:
            arr = np.asarray(m.array)
        except ValueError as exc:
            raise StoreError(f"measurement {m.name!r}: array is ragged") from exc
        if arr.dtype == object:
            raise StoreError(f"measurement {m.name!r}: array is ragged")
        array = arr.tolist()
        shape = [int(n) for n in arr.shape]
    return {
        "experiment_id": experiment_id,
        "step_id": step_id,
        "name": m.name,
        "value": None if m.value is None else float(m.value),
        "uncertainty": None if m.uncertainty is None else float(m.uncertainty),
        "unit": m.unit,
        "array": array,
        "shape": shape,
    }


# --------------------------------------------------------------------------- events


def add_event(
    s: Session,
    kind: str,
    message: str,
    *,
    campaign_id: int | None = None,
    experiment_id: int | None = None,
    instrument: str | None = None,
    data: Mapping[str, Any] | None = None,
    actor: str = "controller",
) -> EventRow:
    """Append an entry to the audit log.

    Args:
        s: The session.
        kind: Dotted event kind, e.g. ``"experiment.failed"``, ``"instrument.quarantined"``.
        message: One line for the operator.
        campaign_id: The campaign concerned, if any.
        experiment_id: The experiment concerned, if any.
        instrument: The instrument concerned, if any.
        data: JSON-serialisable details.
        actor: Who did it: ``"controller"``, ``"operator:<name>"``, ...

    Returns:
        The new row (written with the session's next flush).
    """
    row = EventRow(
        campaign_id=campaign_id,
        experiment_id=experiment_id,
        instrument=instrument,
        kind=kind,
        message=message,
        data=dict(data or {}),
        actor=actor,
    )
    s.add(row)
    return row


def _change_message(what: str, current: Any, new: Any, reason: str | None) -> str:
    text = f"{what}: {current.value} -> {new.value}"
    return f"{text} ({reason})" if reason else text
