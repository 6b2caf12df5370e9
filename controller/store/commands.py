"""Operator commands for a running controller, and the controller's view of its instruments.

The dashboard and the command line never talk to a controller directly: they write a
PENDING :class:`~models.tables.CommandRow`, and the controller that runs the campaign (in
another process, possibly on another machine) applies it within a poll interval and marks
it APPLIED or REFUSED with the reason. The event log records who asked for what.

Commands and their ``args``:

=================  ==========================================================
``pause``          stop starting new steps; steps already sent finish
``resume``         undo ``pause``
``abort``          start nothing more; waiting experiments are abandoned
``approve``        ``{"experiments": [id, ...]}``: let proposals awaiting approval run
``reject``         ``{"experiments": [id, ...], "reason": str}``: abandon them
``instrument_out`` ``{"instrument": name, "reason": str}``: take it out of service
``instrument_in``  ``{"instrument": name}``: put it back in service
``resolve``        ``{"experiment": id, "action": "rerun" | "fail"}``: decide the fate
                   of an interrupted experiment whose action is not safe to re-run
``estop``          emergency stop: cancel every action in flight, send every instrument
                   to its safe state, hold ESTOPPED (see :mod:`controller.estop`)
``reset``          release an emergency stop: the campaign becomes PAUSED
=================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.errors import StoreError
from models.status import CommandStatus, InstrumentState
from models.tables import CommandRow, InstrumentRow, utcnow

COMMANDS: dict[str, frozenset[str]] = {
    "pause": frozenset(),
    "resume": frozenset(),
    "abort": frozenset(),
    "approve": frozenset({"experiments"}),
    "reject": frozenset({"experiments"}),
    "instrument_out": frozenset({"instrument"}),
    "instrument_in": frozenset({"instrument"}),
    "resolve": frozenset({"experiment", "action"}),
    "estop": frozenset(),
    "reset": frozenset(),
}
"""Every command a controller understands, with the ``args`` keys it requires."""


def submit_command(
    s: Session,
    campaign_id: int,
    command: str,
    args: dict[str, Any] | None = None,
    *,
    actor: str,
) -> CommandRow:
    """Queue an operator command for the controller running ``campaign_id``.

    Args:
        s: Open session (the caller commits).
        campaign_id: The campaign the command is for.
        command: One of :data:`COMMANDS`.
        args: The command's arguments.
        actor: Who asked (a user name); recorded with the command and its event.

    Returns:
        The PENDING command row (flushed, so its ``id`` is set).

    Raises:
        StoreError: If the command is unknown or lacks a required argument.
    """
    args = dict(args or {})
    if command not in COMMANDS:
        raise StoreError(f"command: unknown command {command!r} (known: {', '.join(COMMANDS)})")
    missing = COMMANDS[command] - args.keys()
    if missing:
        raise StoreError(f"command {command!r}: missing argument(s) {', '.join(sorted(missing))}")
    row = CommandRow(
        campaign_id=campaign_id,
        command=command,
        args=args,
        actor=actor,
        status=CommandStatus.PENDING,
    )
    s.add(row)
    s.flush()
    return row


def pending_commands(s: Session, campaign_id: int) -> Sequence[CommandRow]:
    """The campaign's PENDING commands, oldest first."""
    return s.scalars(
        select(CommandRow)
        .where(CommandRow.campaign_id == campaign_id, CommandRow.status == CommandStatus.PENDING)
        .order_by(CommandRow.id)
    ).all()


def finish_command(s: Session, row: CommandRow, *, applied: bool, result: str) -> None:
    """Mark a command APPLIED or REFUSED, with what the controller did or why it refused."""
    if row.status != CommandStatus.PENDING:
        raise StoreError(f"command {row.id} is already {row.status.value}")
    row.status = CommandStatus.APPLIED if applied else CommandStatus.REFUSED
    row.result = result
    row.applied_at = utcnow()


def upsert_instrument(
    s: Session,
    campaign_id: int,
    name: str,
    *,
    kind: str,
    address: str,
    state: InstrumentState,
    in_service: bool = True,
    consecutive_faults: int = 0,
    reason: str | None = None,
    driver: str | None = None,
    last_seen_at: datetime | None = None,
) -> InstrumentRow:
    """Write the controller's present view of one instrument (one row per campaign+name)."""
    row = s.scalars(
        select(InstrumentRow).where(
            InstrumentRow.campaign_id == campaign_id, InstrumentRow.name == name
        )
    ).one_or_none()
    if row is None:
        row = InstrumentRow(campaign_id=campaign_id, name=name)
        s.add(row)
    row.kind = kind
    row.address = address
    row.state = state
    row.in_service = in_service
    row.consecutive_faults = consecutive_faults
    row.reason = reason
    if driver is not None:
        row.driver = driver
    if last_seen_at is not None:
        row.last_seen_at = last_seen_at
    s.flush()
    return row


def list_instruments(s: Session, campaign_id: int) -> Sequence[InstrumentRow]:
    """The campaign's instruments as the controller last saw them, by name."""
    return s.scalars(
        select(InstrumentRow)
        .where(InstrumentRow.campaign_id == campaign_id)
        .order_by(InstrumentRow.name)
    ).all()
