"""Tasks for people: what a ``manual`` instrument asks an operator to do, and the answer.

A ``manual`` instrument's driver (:mod:`controller.manual`) writes one OPEN task per
request (keyed by its request id) with the action's instructions, the parameter values
and the declared outputs; an operator claims it (CLAIMED), does it and enters the outputs
(DONE), or marks it FAILED with a reason. A cancelled action (its deadline passed, an
emergency stop) cancels its task. Every change is also an event (``task.*``) naming who
did it, so the audit record says who entered what, and when.

Entered values are checked against the declared outputs: a missing, unknown, non-numeric,
non-integer or out-of-limits value is refused with a :class:`TaskInputError` naming the
field (``values.<output>``), and nothing is written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.store.repo import add_event
from models.errors import SdlabError, StoreError
from models.status import TaskStatus, transition
from models.tables import TaskRow, utcnow

__all__ = [
    "OPEN_TASKS",
    "TaskInputError",
    "cancel_task",
    "check_values",
    "claim_task",
    "complete_task",
    "fail_task",
    "get_task",
    "list_tasks",
    "open_task",
    "task_by_request",
]

OPEN_TASKS = (TaskStatus.OPEN, TaskStatus.CLAIMED)
"""Statuses of tasks still waiting for a person."""


class TaskInputError(SdlabError, ValueError):
    """Values entered for a task that break its declared outputs.

    Attributes:
        field: The offending field (``values.<output>``).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check_values(
    outputs: Sequence[Mapping[str, Any]], values: Mapping[str, Any]
) -> dict[str, float]:
    """Validate entered values against declared outputs; returns them as numbers.

    Args:
        outputs: The declared outputs (``name``, ``type`` ``"number"``/``"integer"``,
            optional ``minimum``, ``maximum``, ``required``).
        values: What the operator entered; numbers, or strings that parse as numbers (a
            form's fields are strings).

    Raises:
        TaskInputError: For the first bad value, naming ``values.<name>``.
    """
    declared = {str(o["name"]): o for o in outputs}
    for name in values:
        if name not in declared:
            raise TaskInputError(f"values.{name}", "not an output of this task")
    out: dict[str, float] = {}
    for name, spec in declared.items():
        raw = values.get(name)
        if raw is None or raw == "":
            if spec.get("required", True):
                raise TaskInputError(f"values.{name}", "required")
            continue
        field = f"values.{name}"
        if isinstance(raw, bool):
            raise TaskInputError(field, f"expected a number, got {raw!r}")
        try:
            number = float(raw.strip()) if isinstance(raw, str) else float(raw)
        except (TypeError, ValueError, OverflowError):
            raise TaskInputError(field, f"expected a number, got {raw!r}") from None
        if not math.isfinite(number):
            raise TaskInputError(field, f"expected a finite number, got {raw!r}")
        if spec.get("type") == "integer" and not number.is_integer():
            raise TaskInputError(field, f"expected an integer, got {raw!r}")
        lo, hi = spec.get("minimum"), spec.get("maximum")
        if lo is not None and number < lo:
            raise TaskInputError(field, f"{number:g} is below the minimum {lo:g}")
        if hi is not None and number > hi:
            raise TaskInputError(field, f"{number:g} is above the maximum {hi:g}")
        out[name] = number
    return out


def open_task(
    s: Session,
    request_id: str,
    *,
    instrument: str,
    action: str,
    instructions: str,
    parameters: Mapping[str, Any],
    outputs: Sequence[Mapping[str, Any]],
    timeout_s: float | None,
) -> TaskRow:
    """The task of ``request_id``: the one already written (a restarted server finds it),
    or a new OPEN one whose deadline is ``timeout_s`` from now."""
    row = task_by_request(s, request_id)
    if row is not None:
        return row
    now = utcnow()
    row = TaskRow(
        request_id=request_id,
        instrument=instrument,
        action=action,
        instructions=instructions,
        parameters=dict(parameters),
        outputs=[dict(o) for o in outputs],
        status=TaskStatus.OPEN,
        created_at=now,
        deadline_at=None if timeout_s is None else now + timedelta(seconds=timeout_s),
    )
    s.add(row)
    s.flush()
    add_event(
        s,
        "task.opened",
        f"task {row.id} on {instrument}: {action} {dict(parameters)}",
        instrument=instrument,
        actor=f"instrument:{instrument}",
        data={"task_id": row.id, "request_id": request_id, "parameters": dict(parameters)},
    )
    return row


def task_by_request(s: Session, request_id: str) -> TaskRow | None:
    """The task of a request id, if written."""
    return s.scalars(select(TaskRow).where(TaskRow.request_id == request_id)).one_or_none()


def get_task(s: Session, task_id: int) -> TaskRow:
    """The task with that id.

    Raises:
        StoreError: If there is none.
    """
    row = s.get(TaskRow, task_id) if 0 < task_id < 2**31 else None
    if row is None:
        raise StoreError(f"task: no task {task_id}")
    return row


def list_tasks(
    s: Session, statuses: Sequence[TaskStatus] | None = OPEN_TASKS, instrument: str | None = None
) -> Sequence[TaskRow]:
    """Tasks in ``statuses`` (``None``: all), oldest first."""
    stmt = select(TaskRow).order_by(TaskRow.id)
    if statuses is not None:
        stmt = stmt.where(TaskRow.status.in_([st.value for st in statuses]))
    if instrument is not None:
        stmt = stmt.where(TaskRow.instrument == instrument)
    return s.scalars(stmt).all()


def _move(
    s: Session, row: TaskRow, target: TaskStatus, actor: str, message: str, **data: Any
) -> None:
    row.status = transition(TaskStatus(row.status), target, f"task {row.id}")
    now = utcnow()
    if target == TaskStatus.CLAIMED:
        row.claimed_by, row.claimed_at = actor, now
    else:
        row.finished_by, row.finished_at = actor, now
    add_event(
        s,
        f"task.{target.value.lower()}",
        message,
        instrument=row.instrument,
        actor=actor,
        data={"task_id": row.id, "request_id": row.request_id, **data},
    )


def claim_task(s: Session, task_id: int, actor: str) -> TaskRow:
    """An operator takes an OPEN task.

    Raises:
        StoreError: No such task. IllegalTransitionError: It is not OPEN.
    """
    row = get_task(s, task_id)
    _move(s, row, TaskStatus.CLAIMED, actor, f"{actor} claimed task {row.id} ({row.action})")
    return row


def complete_task(s: Session, task_id: int, actor: str, values: Mapping[str, Any]) -> TaskRow:
    """An operator enters a claimed task's outputs (checked first: nothing is written if a
    value is bad).

    Raises:
        TaskInputError: A bad value, naming ``values.<output>``.
        StoreError: No such task. IllegalTransitionError: It is not CLAIMED.
    """
    row = get_task(s, task_id)
    clean = check_values(row.outputs, values)
    if row.status != TaskStatus.CLAIMED:
        transition(TaskStatus(row.status), TaskStatus.DONE, f"task {row.id}")  # raises
    row.values = clean
    _move(
        s,
        row,
        TaskStatus.DONE,
        actor,
        f"{actor} entered task {row.id} ({row.action}): {clean}",
        values=clean,
    )
    return row


def fail_task(s: Session, task_id: int, actor: str, reason: str) -> TaskRow:
    """An operator could not do the task (OPEN or CLAIMED).

    Raises:
        TaskInputError: An empty reason (field ``reason``).
        StoreError: No such task. IllegalTransitionError: It is already finished.
    """
    if not reason.strip():
        raise TaskInputError("reason", "say why the task failed")
    row = get_task(s, task_id)
    row.reason = reason.strip()
    _move(s, row, TaskStatus.FAILED, actor, f"{actor} failed task {row.id}: {row.reason}")
    return row


def cancel_task(s: Session, request_id: str, actor: str, reason: str) -> TaskRow | None:
    """Cancel the unfinished task of a request (its action was cancelled); returns it, or
    ``None`` if there is none or it was already finished."""
    row = task_by_request(s, request_id)
    if row is None or row.status not in OPEN_TASKS:
        return None
    row.reason = reason
    _move(s, row, TaskStatus.CANCELLED, actor, f"task {row.id} cancelled: {reason}")
    return row


def deadline_passed(row: TaskRow, now: datetime | None = None) -> bool:
    """Whether an unfinished task is past its deadline (shown to the operator)."""
    return (
        row.status in OPEN_TASKS
        and row.deadline_at is not None
        and (now or utcnow()) > row.deadline_at
    )
