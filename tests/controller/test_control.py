"""``sdlab control``: operator commands from the command line, through the store."""

from __future__ import annotations

import threading
import time

from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.cli import cli
from controller.store import finish_command, pending_commands, transaction
from models.status import CommandStatus
from models.tables import CommandRow, EventRow


def test_a_command_nobody_applies_stays_queued_and_says_so(
    db_url: str, factory: sessionmaker[Session], campaign_id: int
) -> None:
    res = CliRunner().invoke(cli, ["control", "--db", db_url, "demo", "pause", "--wait", "0.3"])
    assert res.exit_code == 1
    assert "no controller is running the campaign" in res.output
    with transaction(factory) as s:
        [cmd] = s.scalars(select(CommandRow)).all()
        assert (cmd.command, cmd.status) == ("pause", CommandStatus.PENDING)
        assert cmd.actor.startswith("cli:")
        ev = s.scalars(select(EventRow).where(EventRow.kind == "command.requested")).one()
        assert ev.data["command_id"] == cmd.id


def test_the_answer_of_the_controller_is_printed(
    db_url: str, factory: sessionmaker[Session], campaign_id: int
) -> None:
    def controller(applied: bool) -> None:  # stands in for controller/operator.py's poller
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with transaction(factory) as s:
                rows = pending_commands(s, campaign_id)
                if rows:
                    finish_command(s, rows[0], applied=applied, result="done by test")
                    return
            time.sleep(0.05)

    for applied, code, word in ((True, 0, "applied"), (False, 1, "refused")):
        t = threading.Thread(target=controller, args=(applied,))
        t.start()
        res = CliRunner().invoke(cli, ["control", "--db", db_url, "demo", "resume"])
        t.join()
        assert res.exit_code == code, res.output
        assert f"resume: {word}" in res.output
        assert "done by test" in res.output


def test_an_unknown_campaign_is_an_error_and_writes_nothing(
    db_url: str, factory: sessionmaker[Session], campaign_id: int
) -> None:
    res = CliRunner().invoke(cli, ["control", "--db", db_url, "nope", "abort", "--wait", "0"])
    assert res.exit_code == 1
    assert "no campaign named 'nope'" in res.output
    with transaction(factory) as s:
        assert s.scalars(select(CommandRow)).all() == []
