"""Lifecycles of campaigns, experiments and steps, each an enum with a transition table.

Nothing assigns a status by hand: the store calls :func:`transition`, which returns the
new status or raises :class:`~models.errors.IllegalTransitionError` (after Ax's
``TrialStatus`` and bluesky's RunEngine state machine). ``FAILED`` experiments may be
queued again; ``ABANDONED`` ones are never proposed again.
"""

from __future__ import annotations

from enum import Enum, StrEnum
from typing import TypeVar

from models.errors import IllegalTransitionError


class CampaignStatus(StrEnum):
    """Where a campaign is in its life."""

    CREATED = "CREATED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    ESTOPPED = "ESTOPPED"  # emergency stop: in-flight actions cancelled, nothing starts
    COMPLETED = "COMPLETED"
    ABORTED = "ABORTED"
    FAILED = "FAILED"


class ExperimentStatus(StrEnum):
    """Where one experiment (one point of the search space, one workflow run) is."""

    PROPOSED = "PROPOSED"  # written by the planner, not yet cleared by the safety gate
    QUEUED = "QUEUED"  # cleared, waiting for an instrument
    RUNNING = "RUNNING"  # at least one step has been dispatched
    COMPLETED = "COMPLETED"  # every step finished and the objectives were measured
    FAILED = "FAILED"  # a step failed; may be queued again
    INTERRUPTED = (
        "INTERRUPTED"  # the controller lost track of it (crash); fate reconciled on restart
    )
    ABANDONED = "ABANDONED"  # refused or given up; never proposed again


class StepStatus(StrEnum):
    """Where one instrument action of an experiment is."""

    QUEUED = "QUEUED"  # recorded, not yet sent
    RUNNING = "RUNNING"  # sent to the instrument (request id assigned)
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    INTERRUPTED = (
        "INTERRUPTED"  # the instrument no longer knows the request; a re-run is a new step
    )
    ABANDONED = "ABANDONED"


class InstrumentState(StrEnum):
    """What the controller knows of an instrument, as the dashboard shows it.

    A silent instrument is ``UNKNOWN``, never ``IDLE``: only an answer proves it is idle.
    """

    IDLE = "IDLE"  # answered recently, nothing of ours running
    BUSY = "BUSY"  # running one of our steps
    UNKNOWN = "UNKNOWN"  # missed its heartbeats or never answered
    QUARANTINED = "QUARANTINED"  # the circuit breaker opened after repeated faults
    OUT_OF_SERVICE = "OUT_OF_SERVICE"  # taken out by an operator


class LabInstrumentState(StrEnum):
    """Whether a lab instrument may take steps, as every campaign of the lab sees it.

    Any state may follow any other: an operator takes an instrument out of service or puts
    it back, a controller quarantines it after repeated faults (until ``until``).
    """

    IN_SERVICE = "IN_SERVICE"
    QUARANTINED = "QUARANTINED"  # a controller's circuit breaker opened; ends at ``until``
    OUT_OF_SERVICE = "OUT_OF_SERVICE"  # taken out by an operator


class CommandStatus(StrEnum):
    """Where an operator command sent to a running controller is."""

    PENDING = "PENDING"  # written by the dashboard or CLI, not yet seen by the controller
    APPLIED = "APPLIED"
    REFUSED = "REFUSED"  # the controller could not apply it; ``result`` says why


class SampleState(StrEnum):
    """Where one experiment's sample is in its life (see ``samples`` in the store)."""

    PREPARED = "PREPARED"  # its container is granted; no step has started on it yet
    IN_PROCESS = "IN_PROCESS"  # a step of its experiment has started
    MEASURED = "MEASURED"  # its experiment completed: the last step measured it
    DISCARDED = "DISCARDED"  # its experiment failed, was abandoned or interrupted


class TaskStatus(StrEnum):
    """Where a task of a ``manual`` instrument (a person's action) is."""

    OPEN = "OPEN"  # waiting for an operator to take it
    CLAIMED = "CLAIMED"  # an operator is doing it
    DONE = "DONE"  # its outputs were entered
    FAILED = "FAILED"  # the operator could not do it (the reason is kept)
    CANCELLED = "CANCELLED"  # the action was cancelled (deadline, emergency stop)


_E = TypeVar("_E", CampaignStatus, ExperimentStatus, StepStatus, SampleState, TaskStatus)

TRANSITIONS: dict[type[Enum], dict[Enum, frozenset[Enum]]] = {
    CampaignStatus: {
        CampaignStatus.CREATED: frozenset({CampaignStatus.RUNNING, CampaignStatus.ABORTED}),
        CampaignStatus.RUNNING: frozenset(
            {
                CampaignStatus.PAUSED,
                CampaignStatus.ESTOPPED,
                CampaignStatus.COMPLETED,
                CampaignStatus.ABORTED,
                CampaignStatus.FAILED,
            }
        ),
        CampaignStatus.PAUSED: frozenset(
            {CampaignStatus.RUNNING, CampaignStatus.ESTOPPED, CampaignStatus.ABORTED}
        ),
        # An emergency stop holds until an operator resets it (to PAUSED: resuming is a
        # second, deliberate act) or gives the campaign up.
        CampaignStatus.ESTOPPED: frozenset({CampaignStatus.PAUSED, CampaignStatus.ABORTED}),
        # A failed campaign may be resumed; a completed one only when its budget is raised.
        CampaignStatus.FAILED: frozenset({CampaignStatus.RUNNING, CampaignStatus.ABORTED}),
        CampaignStatus.COMPLETED: frozenset({CampaignStatus.RUNNING}),
        CampaignStatus.ABORTED: frozenset(),
    },
    ExperimentStatus: {
        ExperimentStatus.PROPOSED: frozenset({ExperimentStatus.QUEUED, ExperimentStatus.ABANDONED}),
        ExperimentStatus.QUEUED: frozenset(
            {ExperimentStatus.RUNNING, ExperimentStatus.ABANDONED, ExperimentStatus.INTERRUPTED}
        ),
        ExperimentStatus.RUNNING: frozenset(
            {
                ExperimentStatus.COMPLETED,
                ExperimentStatus.FAILED,
                ExperimentStatus.INTERRUPTED,
                ExperimentStatus.ABANDONED,
            }
        ),
        ExperimentStatus.INTERRUPTED: frozenset(
            {ExperimentStatus.QUEUED, ExperimentStatus.FAILED, ExperimentStatus.ABANDONED}
        ),
        ExperimentStatus.FAILED: frozenset({ExperimentStatus.QUEUED, ExperimentStatus.ABANDONED}),
        ExperimentStatus.COMPLETED: frozenset(),
        ExperimentStatus.ABANDONED: frozenset(),
    },
    StepStatus: {
        StepStatus.QUEUED: frozenset(
            {StepStatus.RUNNING, StepStatus.ABANDONED, StepStatus.INTERRUPTED}
        ),
        StepStatus.RUNNING: frozenset(
            {StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.INTERRUPTED}
        ),
        StepStatus.COMPLETED: frozenset(),
        StepStatus.FAILED: frozenset(),
        StepStatus.INTERRUPTED: frozenset(),
        StepStatus.ABANDONED: frozenset(),
    },
    SampleState: {
        SampleState.PREPARED: frozenset(
            {SampleState.IN_PROCESS, SampleState.MEASURED, SampleState.DISCARDED}
        ),
        SampleState.IN_PROCESS: frozenset(
            {SampleState.IN_PROCESS, SampleState.MEASURED, SampleState.DISCARDED}
        ),
        SampleState.MEASURED: frozenset(),
        # an interrupted experiment an operator runs again takes its sample up again
        SampleState.DISCARDED: frozenset({SampleState.PREPARED, SampleState.IN_PROCESS}),
    },
    TaskStatus: {
        TaskStatus.OPEN: frozenset({TaskStatus.CLAIMED, TaskStatus.FAILED, TaskStatus.CANCELLED}),
        TaskStatus.CLAIMED: frozenset({TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED}),
        TaskStatus.DONE: frozenset(),
        TaskStatus.FAILED: frozenset(),
        TaskStatus.CANCELLED: frozenset(),
    },
}

TERMINAL_EXPERIMENT = frozenset({ExperimentStatus.COMPLETED, ExperimentStatus.ABANDONED})
"""Experiment statuses that never change again."""

FINISHED_EXPERIMENT = frozenset(
    {ExperimentStatus.COMPLETED, ExperimentStatus.FAILED, ExperimentStatus.ABANDONED}
)
"""Experiment statuses of a finished run (``finished_at`` is set): a FAILED one may still be
queued again."""

IN_FLIGHT_EXPERIMENT = frozenset(
    {ExperimentStatus.PROPOSED, ExperimentStatus.QUEUED, ExperimentStatus.RUNNING}
)
"""Experiment statuses a running controller carries (recovery reconciles them at start)."""

PENDING_EXPERIMENT = frozenset({*IN_FLIGHT_EXPERIMENT, ExperimentStatus.INTERRUPTED})
"""Experiment statuses a planner must treat as pending, and whose cost is committed: in
flight, or INTERRUPTED (waiting for an operator's decision)."""

ENDED_EXPERIMENT = frozenset({*FINISHED_EXPERIMENT, ExperimentStatus.INTERRUPTED})
"""Experiment statuses no longer in flight (their sample goes back to storage)."""

FINISHED_STEP = frozenset(
    {StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.INTERRUPTED, StepStatus.ABANDONED}
)
"""Step statuses that never change again."""

IN_FLIGHT_STEP = frozenset({StepStatus.QUEUED, StepStatus.RUNNING})
"""Step statuses of a step written and maybe sent, whose outcome is not recorded."""


def can_transition(current: _E, target: _E) -> bool:
    """Whether ``current -> target`` is allowed by the lifecycle's transition table."""
    table = TRANSITIONS[type(current)]
    return target in table[current]


def transition(current: _E, target: _E, record_id: str | None = None) -> _E:
    """Validate a status change and return the new status.

    Args:
        current: The record's present status.
        target: The status it should move to (same enum as ``current``).
        record_id: Identifier of the record, used in the error message.

    Returns:
        ``target``, once the move has been checked.

    Raises:
        IllegalTransitionError: If the table forbids the move (including ``target`` being of
            another lifecycle than ``current``).
    """
    if type(current) is not type(target) or not can_transition(current, target):
        raise IllegalTransitionError(
            type(current).__name__, current.value, getattr(target, "value", str(target)), record_id
        )
    return target
