"""The campaign loop's writes, in SQLAlchemy Core: few statements, status compare-and-set.

The event loop writes every experiment three times (when it is proposed, when its step is
sent, when the result is back), hundreds of times a second with instant instruments. The
ORM's unit of work costs about a millisecond per flush; these functions issue the INSERT and
UPDATE statements directly instead, inside the caller's transaction, and still honour the
lifecycles: every status change goes through :func:`models.status.transition`, and the
UPDATE only matches a row still in the status the caller believes it is in, so a second
controller working on the same campaign is caught (:class:`~models.errors.StoreError`)
rather than silently overwritten.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, func, insert, literal, select, update
from sqlalchemy.orm import Session

from controller.store.queries import learns_from, next_known_seq
from controller.store.repo import ROUTINE_MOVES, experiment_event, measurement_values
from models.errors import StoreError
from models.params import ParamValue
from models.records import Decision, Measurement, Proposal
from models.status import FINISHED_EXPERIMENT, ExperimentStatus, StepStatus, transition
from models.tables import (
    DecisionRow,
    ExperimentRow,
    MeasurementRow,
    StepRow,
    UTCDateTime,
    utcnow,
)

_decisions: Table = DecisionRow.__table__  # type: ignore[assignment]
_experiments: Table = ExperimentRow.__table__  # type: ignore[assignment]
_steps: Table = StepRow.__table__  # type: ignore[assignment]
_measurements: Table = MeasurementRow.__table__  # type: ignore[assignment]

_FINISHED = FINISHED_EXPERIMENT


def insert_decision(
    s: Session,
    campaign_id: int,
    decision: Decision,
    accepted: Sequence[tuple[int, Proposal, Mapping[str, ParamValue]]],
    refused: Sequence[tuple[int, Proposal, str]],
    *,
    hold: bool = False,
    infeasible: Collection[int] = (),
) -> tuple[int, dict[int, int]]:
    """Write a decision and its experiments: accepted ones QUEUED, refused ones ABANDONED.

    Args:
        s: The session (its transaction is the caller's).
        campaign_id: The campaign.
        decision: The planner's decision.
        accepted: ``(proposal index, proposal, normalised point)`` that passed the gate.
        refused: ``(proposal index, proposal, reason)`` that the gate refused.
        hold: Keep accepted experiments PROPOSED (waiting for an operator's approval).
        infeasible: Proposal indexes of ``refused`` that the planner learns as infeasible
            (refused by the safety gate); they are numbered into what the planner knows in
            the order of ``refused`` (see :func:`controller.store.queries.learns_from`).

    Returns:
        The decision id, and the new experiment id of each proposal index.
    """
    now = utcnow()
    decision_id = s.execute(
        insert(_decisions).returning(_decisions.c.id),
        {
            "campaign_id": campaign_id,
            "planner": decision.planner,
            "version": decision.version,
            "seed": decision.seed,
            "n_train": decision.n_train,
            "n_pending": decision.n_pending,
            "n_proposed": len(decision.proposals),
            "candidate_scores": [float(v) for v in decision.candidate_scores],
            "details": dict(decision.details),
            "seconds": float(decision.seconds),
            "created_at": now,
        },
    ).scalar_one()
    rows: list[dict[str, Any]] = []
    order: list[int] = []
    for k, prop, point in accepted:
        status = (
            ExperimentStatus.PROPOSED
            if hold
            else transition(ExperimentStatus.PROPOSED, ExperimentStatus.QUEUED)
        )
        rows.append(_experiment(campaign_id, decision_id, k, prop, dict(point), status, None, now))
        order.append(k)
    seq = next_known_seq(s, campaign_id) if infeasible else 0
    for k, prop, reason in refused:
        status = transition(ExperimentStatus.PROPOSED, ExperimentStatus.ABANDONED)
        row = _experiment(
            campaign_id, decision_id, k, prop, dict(prop.parameters), status, reason, now
        )
        if k in infeasible:
            row["known_seq"] = seq
            seq += 1
        rows.append(row)
        order.append(k)
    ids: dict[int, int] = {}
    if rows:
        result = s.execute(
            insert(_experiments).returning(_experiments.c.id, sort_by_parameter_order=True), rows
        )
        ids = dict(zip(order, result.scalars().all(), strict=True))
    return int(decision_id), ids


def _experiment(
    campaign_id: int,
    decision_id: int,
    index: int,
    prop: Proposal,
    parameters: dict[str, Any],
    status: ExperimentStatus,
    reason: str | None,
    now: datetime,
) -> dict[str, Any]:
    return {
        "campaign_id": campaign_id,
        "decision_id": decision_id,
        "status": status,
        "parameters": parameters,
        "proposal_index": index,
        "origin": prop.origin,
        "score": None if prop.score is None else float(prop.score),
        "reason": reason,
        "created_at": now,
        "started_at": None,
        "finished_at": now if status in _FINISHED else None,
        "known_seq": None,
    }


def move_experiment(
    s: Session,
    experiment_id: int,
    current: ExperimentStatus,
    target: ExperimentStatus,
    *,
    reason: str | None = None,
    infeasible: bool = False,
    campaign_id: int | None = None,
    actor: str = "controller",
    now: datetime | None = None,
) -> ExperimentStatus:
    """Change an experiment's status from ``current`` to ``target``.

    An experiment that becomes COMPLETED or FAILED, or ABANDONED with ``infeasible`` (the
    safety gate refused it, an operator rejected it), is numbered into what the planner
    knows (``known_seq``, see :func:`controller.store.queries.known_observations`).

    The routine path (PROPOSED -> QUEUED -> RUNNING -> COMPLETED) is told by the row's own
    timestamps and its steps; every other move (failed, abandoned, interrupted, queued
    again) also appends the event ``experiment.<target lower>`` (see
    :func:`controller.store.repo.experiment_event`).

    Args:
        s: The session (its transaction is the caller's).
        experiment_id: The experiment.
        current: The status the caller believes it is in.
        target: The new status.
        reason: Why (kept on the row, and in the event).
        infeasible: An ABANDONED experiment is abandoned as infeasible.
        campaign_id: The experiment's campaign (read from the row when an event is due
            and it is not given).
        actor: Who moved it (in the event).
        now: The time of the change; the current UTC time by default.

    Returns:
        ``target``.

    Raises:
        IllegalTransitionError: If the lifecycle forbids the move.
        StoreError: If the row is not in ``current`` any more (another writer moved it).
    """
    new = transition(current, target, f"experiment {experiment_id}")
    now = now or utcnow()
    values: dict[str, Any] = {"status": new}
    if new is ExperimentStatus.RUNNING:
        values["started_at"] = _coalesce(_experiments.c.started_at, now)
    if new in _FINISHED:
        values["finished_at"] = now
    elif new is ExperimentStatus.QUEUED:
        values["finished_at"] = None
    if reason is not None:
        values["reason"] = reason
    if learns_from(new, infeasible=infeasible):
        values["known_seq"] = _next_seq()
    _cas(s, _experiments, experiment_id, current, values, "experiment")
    if (current, new) not in ROUTINE_MOVES:
        if campaign_id is None:
            campaign_id = s.execute(
                select(_experiments.c.campaign_id).where(_experiments.c.id == experiment_id)
            ).scalar_one()
        experiment_event(s, campaign_id, experiment_id, current, new, reason, actor=actor)
    return new


def start_step(
    s: Session,
    experiment_id: int,
    *,
    index: int,
    kind: str,
    action: str,
    parameters: Mapping[str, Any],
    request_id: str,
    instrument: str,
    attempt: int = 1,
    rerun: bool = False,
) -> int:
    """Write a step as RUNNING ("may have been sent"), before it is sent.

    Returns:
        The step's id.

    Raises:
        sqlalchemy.exc.IntegrityError: If the request id or (experiment, index, attempt)
            is taken.
    """
    now = utcnow()
    status = transition(StepStatus.QUEUED, StepStatus.RUNNING)
    step_id = s.execute(
        insert(_steps).returning(_steps.c.id),
        {
            "experiment_id": experiment_id,
            "index": index,
            "attempt": attempt,
            "rerun": rerun,
            "kind": kind,
            "action": action,
            "instrument": instrument,
            "request_id": request_id,
            "status": status,
            "parameters": dict(parameters),
            "error": None,
            "queued_at": now,
            "sent_at": now,
            "started_at": None,
            "finished_at": None,
        },
    ).scalar_one()
    return int(step_id)


def finish_step(
    s: Session,
    step_id: int,
    experiment_id: int,
    target: StepStatus,
    *,
    current: StepStatus = StepStatus.RUNNING,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    error: str | None = None,
    measurements: Sequence[Measurement] = (),
) -> None:
    """End a step (COMPLETED, FAILED or INTERRUPTED) and record its measurements.

    Raises:
        IllegalTransitionError: If the lifecycle forbids the move.
        StoreError: If the step is not in ``current`` any more, or an array is ragged.
    """
    new = transition(current, target, f"step {step_id}")
    values: dict[str, Any] = {"status": new, "finished_at": finished_at or utcnow()}
    if started_at is not None:
        values["started_at"] = started_at
    if error is not None:
        values["error"] = error
    _cas(s, _steps, step_id, current, values, "step")
    if measurements:
        now = utcnow()
        rows = [
            {**measurement_values(experiment_id, step_id, m), "created_at": now}
            for m in measurements
        ]
        s.execute(insert(_measurements), rows)


def _next_seq() -> Any:
    """The next ``known_seq`` of the updated experiment's campaign, as a subquery."""
    other = _experiments.alias("known")
    return (
        select(func.coalesce(func.max(other.c.known_seq), 0) + 1)
        .where(other.c.campaign_id == _experiments.c.campaign_id)
        .scalar_subquery()
    )


def _coalesce(column: Any, value: datetime) -> Any:
    return func.coalesce(column, literal(value, UTCDateTime()))


def _cas(
    s: Session, table: Any, row_id: int, current: Any, values: dict[str, Any], what: str
) -> None:
    result = s.execute(
        update(table).where(table.c.id == row_id, table.c.status == current).values(**values)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise StoreError(
            f"{what} {row_id} is no longer {current.value}: another controller may be "
            "running this campaign"
        )
