"""Samples in the store: which container holds each experiment's sample, where it is now.

A sample row is made with its experiment's first step, in the transaction that writes the
step: its label is the container unit the experiment was granted (e.g. ``crucible-3``), or
``sample-<experiment id>`` when the campaign declares no sample container. Each step start
moves it to the step's instrument; when the experiment ends it goes back to ``storage``,
MEASURED if the experiment completed and DISCARDED otherwise. Every move is a
``sample.moved`` event (from, to, step) in the audit log, written in the transaction that
writes the step (or ends the experiment).

Like the rest of :mod:`controller.store`, the functions receive a session; they issue Core
statements because they run on the controller's hot path (every step start).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import Table, insert, select, update
from sqlalchemy.orm import Session

from models.status import ExperimentStatus, SampleState, transition
from models.tables import EventRow, ExperimentRow, SampleRow, utcnow

_samples: Table = SampleRow.__table__  # type: ignore[assignment]
_events: Table = EventRow.__table__  # type: ignore[assignment]

STORAGE = "storage"
"""Location of a sample that is on no instrument."""

ACTIVE = (SampleState.PREPARED, SampleState.IN_PROCESS)
"""States of a sample whose experiment still holds it (and its container)."""


def _event(
    s: Session,
    campaign_id: int,
    experiment_id: int,
    kind: str,
    message: str,
    data: dict[str, Any],
    instrument: str | None = None,
) -> None:
    s.execute(
        insert(_events),
        {
            "campaign_id": campaign_id,
            "experiment_id": experiment_id,
            "instrument": instrument,
            "kind": kind,
            "message": message,
            "data": data,
            "actor": "controller",
            "created_at": utcnow(),
        },
    )


class SampleNow(NamedTuple):
    """What the store holds about a sample now (the controller keeps it between steps)."""

    id: int
    label: str
    location: str
    state: SampleState


def _current(s: Session, experiment_id: int) -> SampleNow | None:
    row = s.execute(
        select(_samples.c.id, _samples.c.label, _samples.c.location, _samples.c.state).where(
            _samples.c.experiment_id == experiment_id
        )
    ).first()
    if row is None:
        return None
    return SampleNow(int(row[0]), str(row[1]), str(row[2]), SampleState(row[3]))


def move_sample(
    s: Session,
    campaign_id: int,
    experiment_id: int,
    *,
    to: str,
    step: int,
    action: str,
    label: str,
    container: str | None,
    now: SampleNow | None = None,
) -> SampleNow:
    """Record that a step of the experiment starts on ``to`` with its sample.

    Makes the sample if the experiment has none yet (PREPARED in storage, moved at once),
    or takes up a DISCARDED one again (an interrupted experiment run again, possibly in
    another container), and moves it to ``to`` (IN_PROCESS) with a ``sample.moved`` event.

    Args:
        s: The session (the step's transaction).
        campaign_id: The campaign.
        experiment_id: The experiment.
        to: The instrument the step runs on.
        step: The step's index in the workflow.
        action: The step's action.
        label: The sample's label: its container unit, or ``sample-<experiment id>``.
        container: The container resource (``None``: no container declared).
        now: The sample as last written, if the caller knows it (saves a query).

    Returns:
        The sample as it is now.
    """
    stamp = utcnow()
    found = now if now is not None else _current(s, experiment_id)
    if found is None:
        state = transition(SampleState.PREPARED, SampleState.IN_PROCESS)
        sample_id = s.execute(
            insert(_samples).returning(_samples.c.id),
            {
                "campaign_id": campaign_id,
                "experiment_id": experiment_id,
                "label": label,
                "container": container,
                "location": to,
                "state": state,
                "created_at": stamp,
                "updated_at": stamp,
            },
        ).scalar_one()
        found = SampleNow(int(sample_id), label, STORAGE, SampleState.PREPARED)
    else:
        state = transition(found.state, SampleState.IN_PROCESS, f"sample {found.id}")
        s.execute(
            update(_samples)
            .where(_samples.c.id == found.id)
            .values(location=to, state=state, label=label, container=container, updated_at=stamp)
        )
    data: dict[str, Any] = {"label": label, "from": found.location, "to": to, "step": step}
    data["action"] = action
    if found.state is SampleState.PREPARED:
        data["created"] = True
    if found.label != label:
        data["relabelled_from"] = found.label
    _event(
        s,
        campaign_id,
        experiment_id,
        "sample.moved",
        f"sample {label} of experiment {experiment_id}: {found.location} -> {to} "
        f"(step {step}, {action})",
        data,
        instrument=to,
    )
    return SampleNow(found.id, label, to, state)


def finish_sample(
    s: Session,
    campaign_id: int,
    experiment_id: int,
    outcome: ExperimentStatus,
    now: SampleNow | None = None,
) -> SampleNow | None:
    """Put the experiment's sample back in storage when the experiment ends.

    Args:
        s: The session (the transaction that ends the experiment).
        campaign_id: The campaign.
        experiment_id: The experiment.
        outcome: How the experiment ended: COMPLETED makes the sample MEASURED, anything
            else DISCARDED.
        now: The sample as last written, if the caller knows it (saves a query).

    Returns:
        The sample as it is now, or ``None`` if the experiment had no sample in use.
    """
    found = now if now is not None else _current(s, experiment_id)
    if found is None or found.state not in ACTIVE:
        return None
    done = outcome == ExperimentStatus.COMPLETED
    target = SampleState.MEASURED if done else SampleState.DISCARDED
    new = transition(found.state, target, f"sample {found.id}")
    s.execute(
        update(_samples)
        .where(_samples.c.id == found.id)
        .values(location=STORAGE, state=new, updated_at=utcnow())
    )
    _event(
        s,
        campaign_id,
        experiment_id,
        "sample.moved",
        f"sample {found.label} of experiment {experiment_id}: {found.location} -> {STORAGE} "
        f"({new.value.lower()}, experiment {outcome.value})",
        {"label": found.label, "from": found.location, "to": STORAGE, "state": new.value},
    )
    return SampleNow(found.id, found.label, STORAGE, new)


def active_samples(s: Session, campaign_id: int) -> list[tuple[int, str, str | None]]:
    """``(experiment id, label, container)`` of the campaign's samples still in use."""
    stmt = (
        select(_samples.c.experiment_id, _samples.c.label, _samples.c.container)
        .where(
            _samples.c.campaign_id == campaign_id,
            _samples.c.state.in_([st.value for st in ACTIVE]),
        )
        .order_by(_samples.c.experiment_id)
    )
    return [(int(e), str(label), c) for e, label, c in s.execute(stmt)]


def list_samples(s: Session, campaign_id: int | None) -> list[SampleRow]:
    """The samples of a campaign (``None``: of every campaign), by experiment id."""
    stmt = select(SampleRow).order_by(SampleRow.experiment_id)
    if campaign_id is not None:
        stmt = stmt.where(SampleRow.campaign_id == campaign_id)
    return list(s.scalars(stmt))


def set_waiting(s: Session, reasons: dict[int, str | None]) -> None:
    """Write what each experiment waits for (``None``: it waits for nothing)."""
    if not reasons:
        return
    table: Table = ExperimentRow.__table__  # type: ignore[assignment]
    for experiment_id, why in reasons.items():
        s.execute(update(table).where(table.c.id == experiment_id).values(waiting_for=why))


def clear_waiting(s: Session, campaign_id: int) -> None:
    """Forget every waiting reason of the campaign (a controller starts afresh)."""
    table: Table = ExperimentRow.__table__  # type: ignore[assignment]
    s.execute(
        update(table)
        .where(table.c.campaign_id == campaign_id, table.c.waiting_for.is_not(None))
        .values(waiting_for=None)
    )
