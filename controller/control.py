"""Operator commands from the command line: ``sdlab control CAMPAIGN
pause|resume|abort|estop|reset``.

The same path the dashboard takes: a PENDING row in the store's ``commands`` table, applied
by whichever controller holds the campaign's lease (on this machine or another) within its
poll interval, or by the next controller that runs the campaign. A lab without the dashboard
can therefore resume a campaign that restarted paused, or stop one over SSH.
"""

from __future__ import annotations

import getpass
import time
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from controller.store import (
    add_event,
    get_campaign,
    make_engine,
    migrate,
    session_factory,
    submit_command,
    transaction,
)
from controller.store.lease import lease_is_live, lease_of
from models.errors import CampaignStateError
from models.status import CommandStatus
from models.tables import CommandRow

__all__ = ["CONTROL_COMMANDS", "CommandOutcome", "send_command"]

CONTROL_COMMANDS = ("pause", "resume", "abort", "estop", "reset")
"""The commands ``sdlab control`` sends (the dashboard offers the others)."""


@dataclass(frozen=True)
class CommandOutcome:
    """What became of a command.

    Attributes:
        command_id: The command's row id.
        status: ``APPLIED``, ``REFUSED`` or, if nobody applied it in time, ``PENDING``.
        result: The controller's answer (what it did, or why it refused).
        controller_live: Whether a controller held the campaign's lease when it was sent.
    """

    command_id: int
    status: CommandStatus
    result: str | None
    controller_live: bool


def send_command(
    db_url: str, campaign: str, command: str, *, wait_s: float = 30.0, poll_s: float = 0.2
) -> CommandOutcome:
    """Queue ``command`` for ``campaign`` and wait up to ``wait_s`` for a controller's answer.

    Raises:
        CampaignStateError: If there is no such campaign or the command is not one of
            :data:`CONTROL_COMMANDS`.
    """
    if command not in CONTROL_COMMANDS:
        raise CampaignStateError(f"command: {command!r} is not one of {CONTROL_COMMANDS}")
    actor = f"cli:{getpass.getuser()}"
    engine = make_engine(db_url)
    try:
        migrate(engine)
        factory = session_factory(engine)
        with transaction(factory) as s:
            row = get_campaign(s, campaign)
            if row is None:
                raise CampaignStateError(f"campaign: no campaign named {campaign!r} in {db_url}")
            live = lease_is_live(lease_of(s, row.id))
            cmd = submit_command(s, row.id, command, actor=actor)
            add_event(
                s,
                "command.requested",
                f"{actor} asked for {command} (command {cmd.id})",
                campaign_id=row.id,
                data={"command_id": cmd.id, "command": command, "args": {}},
                actor=actor,
            )
            command_id = cmd.id
        deadline = time.monotonic() + wait_s
        while True:
            status, result = _read(factory, command_id)
            if status != CommandStatus.PENDING or time.monotonic() >= deadline:
                return CommandOutcome(command_id, status, result, live)
            time.sleep(poll_s)
    finally:
        engine.dispose()


def _read(factory: sessionmaker[Session], command_id: int) -> tuple[CommandStatus, str | None]:
    with transaction(factory) as s:
        row = s.get_one(CommandRow, command_id)
        return row.status, row.result
