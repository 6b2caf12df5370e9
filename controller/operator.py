"""Operator commands reaching a running controller through the store.

The dashboard and the command line write PENDING rows (:mod:`controller.store.commands`);
the controller polls them every ``reliability.command_poll_s``, applies each in order, marks
it APPLIED or REFUSED with what it did or why not, and writes an event naming the operator.
A command for a campaign whose controller is not running waits for the next start.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from controller.estop import ESTOP_COMMANDS
from controller.store import finish_command, pending_commands
from models.errors import SdlabError
from models.tables import CommandRow

if TYPE_CHECKING:
    from controller.loop import CampaignController

logger = logging.getLogger(__name__)


class CommandRefused(SdlabError, ValueError):
    """A command cannot be applied; the message says why (stored as the command's result)."""


class OperatorCommands:
    """Polls and applies a campaign's operator commands.

    Args:
        ctl: The running controller.
    """

    def __init__(self, ctl: CampaignController) -> None:
        self.ctl = ctl

    async def poll_forever(self) -> None:
        """Apply pending commands every poll interval (cancel the task to stop)."""
        while True:
            try:
                await self.poll_once()
            except Exception:  # a store hiccup must not end the polling
                logger.exception("campaign %s: polling operator commands failed", self.ctl.name)
            await asyncio.sleep(self.ctl.spec.reliability.command_poll_s)

    async def poll_once(self) -> int:
        """Apply every pending command once; returns how many were handled."""
        ctl = self.ctl
        todo = await ctl.writer.read(
            lambda s: [
                (c.id, c.command, dict(c.args), c.actor)
                for c in pending_commands(s, ctl.campaign_id)
            ]
        )
        for cid, command, args, actor in todo:
            try:
                result = await self._apply(command, args, actor)
                applied = True
            except (CommandRefused, SdlabError, KeyError, TypeError, ValueError) as exc:
                result = str(exc)
                applied = False

            def write(
                s: Session,
                cid: int = cid,
                command: str = command,
                args: Any = args,
                actor: str = actor,
                applied: bool = applied,
                result: str = result,
            ) -> None:
                finish_command(s, s.get_one(CommandRow, cid), applied=applied, result=result)
                ctl.writer.event(
                    s,
                    f"command.{'applied' if applied else 'refused'}",
                    f"{command} by {actor}: {result}",
                    actor=actor,
                    data={"command_id": cid, "command": command, "args": args},
                )

            await ctl.writer.run(write)
            logger.info("command %s by %s %s: %s", command, actor, applied, result)
        return len(todo)

    async def _apply(self, command: str, args: dict[str, Any], actor: str) -> str:
        ctl = self.ctl
        if command in ESTOP_COMMANDS:  # emergency stop and its reset (controller/estop.py)
            return await ctl.estop.apply(command, actor)
        ctl.estop.check_allowed(command)
        if command == "pause":
            await ctl.pause(actor)
            return "paused: no new steps start; steps already sent finish"
        if command == "resume":
            await ctl.resume(actor)
            return "resumed"
        if command == "abort":
            await ctl.abort(actor)
            return "aborting: waiting experiments abandoned, running steps finish"
        if command in ("approve", "reject"):
            ids = [int(i) for i in args["experiments"]]
            if command == "approve":
                done = await ctl.approve(ids, actor)
                return f"approved experiments {done}"
            done = await ctl.reject(ids, actor, str(args.get("reason") or "rejected"))
            return f"rejected experiments {done}"
        if command in ("instrument_out", "instrument_in"):
            name = str(args["instrument"])
            slot = ctl.instruments.get(name)
            if slot is None:
                raise CommandRefused(f"instrument: no instrument named {name!r}")
            assert ctl.health is not None
            out = command == "instrument_out"
            reason = str(args.get("reason") or f"taken out of service by {actor}")
            await ctl.health.set_service(slot, not out, reason)
            return f"{name} {'out of' if out else 'back in'} service"
        if command == "resolve":
            action = str(args["action"])
            if action not in ("rerun", "fail"):
                raise CommandRefused("action: expected 'rerun' or 'fail'")
            return await ctl.resolve(int(args["experiment"]), action, actor)
        raise CommandRefused(f"command: unknown command {command!r}")
