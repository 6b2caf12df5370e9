"""The emergency stop: cancel every action in flight, make every instrument safe, hold.

Safety has two speeds (DESIGN.md, "A lab, not only a campaign"). ``abort`` lets the steps
already sent finish. An emergency stop (``sdlab control NAME estop``, the dashboard's
Emergency stop button) does not wait:

1. the campaign moves to ``ESTOPPED`` (from RUNNING or PAUSED) and nothing new is sent;
2. every step the store holds as in flight is cancelled through the protocol (``cancel``
   with its request id), on all instruments at once;
3. every instrument of the campaign is sent ``safe_state`` (``docs/protocol.md`` 3.7) and
   what its driver did is written to the event log. A server that does not know the
   message (``unknown_type``) is reported as "no safe state", the cancels having been sent;
4. each cancelled step is recorded as FAILED with the error ``cancelled: emergency stop by
   <actor>`` (INTERRUPTED if the instrument did not confirm the cancel), and its
   experiment becomes INTERRUPTED with a ``decision_needed`` alarm: nothing measured is
   lost and nothing is run again until an operator resolves it (``rerun`` or ``fail``). A
   step that completed before the cancel arrived is recorded as completed.

The campaign stays ESTOPPED, across controller restarts (a restarted controller sends the
cancels and ``safe_state`` again), until an operator resets it (``sdlab control NAME reset``):
it then becomes PAUSED, and resuming it is a second, deliberate act. An ESTOPPED campaign
may also be aborted.

:class:`EmergencyStop` is the part of the campaign controller that does this; the step
runner calls :meth:`EmergencyStop.claims` and :meth:`EmergencyStop.record_step` for steps
that end while the stop holds.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.store import set_campaign_status
from controller.store.queries import steps_in_status
from instruments.protocol import UNKNOWN_TYPE, RequestState, RequestStatus
from models.errors import CampaignStateError, InstrumentError
from models.status import IN_FLIGHT_STEP, CampaignStatus, ExperimentStatus, StepStatus
from models.tables import CampaignRow, EventRow

if TYPE_CHECKING:
    from controller.loop import CampaignController
    from controller.work import InstrumentSlot, Work

logger = logging.getLogger(__name__)

__all__ = ["ESTOP_COMMANDS", "EmergencyStop", "InstrumentStop"]

ESTOP_COMMANDS = ("estop", "reset")
"""The operator commands this module applies."""

NO_SAFE_STATE = "no safe state: its server does not know the safe_state message"
"""What is reported for an instrument whose server answers ``unknown_type``."""


@dataclass
class InstrumentStop:
    """What the emergency stop achieved on one instrument.

    Attributes:
        instrument: Its name.
        cancelled: Request id -> the state the cancel reply gave (or the error).
        safe: Whether the driver reported its safe state.
        description: What the driver did, or why there is no safe state.
    """

    instrument: str
    cancelled: dict[str, str] = field(default_factory=dict)
    safe: bool = False
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        """The JSON form (stored with the ``estop.instrument`` event)."""
        return {
            "instrument": self.instrument,
            "cancelled": self.cancelled,
            "safe": self.safe,
            "description": self.description,
        }


class EmergencyStop:
    """A campaign controller's emergency stop.

    Args:
        ctl: The controller.
    """

    def __init__(self, ctl: CampaignController) -> None:
        self.ctl = ctl
        self.active = False
        """Whether the stop holds (the campaign is ESTOPPED)."""
        self.actor: str | None = None
        """Who stopped it."""
        self.last: list[InstrumentStop] = []
        """What the last stop achieved, per instrument."""

    @property
    def reason(self) -> str:
        """``"emergency stop by <actor>"``."""
        return f"emergency stop by {self.actor or 'operator'}"

    # ------------------------------------------------------------------ commands

    async def apply(self, command: str, actor: str) -> str:
        """Apply ``estop`` or ``reset`` (an operator command); returns what was done.

        Raises:
            CampaignStateError: ``reset`` of a campaign that is not emergency-stopped.
        """
        if command == "estop":
            return await self.trigger(actor)
        if command == "reset":
            return await self.reset(actor)
        raise CampaignStateError(f"command: {command!r} is not one of {ESTOP_COMMANDS}")

    def check_allowed(self, command: str) -> None:
        """Refuse the commands that would start steps while the stop holds.

        Raises:
            CampaignStateError: ``pause`` or ``resume`` while ESTOPPED.
        """
        if self.active and command in ("pause", "resume"):
            raise CampaignStateError(
                f"{command}: the campaign is ESTOPPED ({self.reason}); reset it first"
            )

    async def trigger(self, actor: str) -> str:
        """Stop now: nothing new starts, everything in flight is cancelled, every
        instrument is sent to its safe state. Returns a summary for the operator.

        Raises:
            IllegalTransitionError: If the campaign is neither RUNNING, PAUSED nor already
                ESTOPPED (nothing is sent).
        """
        ctl = self.ctl

        def write(s: Session) -> None:
            row = s.get_one(CampaignRow, ctl.campaign_id)
            if row.status != CampaignStatus.ESTOPPED:
                set_campaign_status(
                    s,
                    row,
                    CampaignStatus.ESTOPPED,
                    actor=actor,
                    reason=f"emergency stop by {actor}",
                )

        await ctl.writer.run(write)
        self.active, self.actor = True, actor
        ctl.paused = True  # the dispatcher starts nothing while paused
        await ctl.notify()
        return await self._stop_instruments()

    async def restore(self) -> None:
        """At controller start: if the store says ESTOPPED, hold, and send the cancels and
        ``safe_state`` again (the controller that stopped may have died half-way)."""
        ctl = self.ctl

        def read(s: Session) -> tuple[CampaignStatus, str | None]:
            status = s.get_one(CampaignRow, ctl.campaign_id).status
            actor = s.scalars(
                select(EventRow.actor)
                .where(
                    EventRow.campaign_id == ctl.campaign_id, EventRow.kind == "campaign.estopped"
                )
                .order_by(EventRow.id.desc())
                .limit(1)
            ).first()
            return status, actor

        status, actor = await ctl.writer.read(read)
        if status != CampaignStatus.ESTOPPED:
            return
        self.active, self.actor = True, actor or "operator"
        ctl.paused = True
        summary = await self._stop_instruments()
        logger.warning("campaign %s restarted ESTOPPED: %s", ctl.name, summary)

    async def reset(self, actor: str) -> str:
        """Release the stop: the campaign becomes PAUSED (an operator then resumes it).

        Raises:
            CampaignStateError: If the campaign is not emergency-stopped.
        """
        ctl = self.ctl
        if not self.active:
            raise CampaignStateError("reset: the campaign is not emergency-stopped")

        def write(s: Session) -> None:
            row = s.get_one(CampaignRow, ctl.campaign_id)
            set_campaign_status(
                s, row, CampaignStatus.PAUSED, actor=actor, reason=f"reset by {actor}"
            )

        await ctl.writer.run(write)
        self.active = False
        ctl.paused = True
        await ctl.notify()
        return "reset: the campaign is PAUSED; resume it to start new steps"

    # ------------------------------------------------------------------ instruments

    async def _stop_instruments(self) -> str:
        ctl = self.ctl
        in_flight = await ctl.writer.read(
            lambda s: [
                (st.instrument, st.request_id)
                for st in steps_in_status(s, ctl.campaign_id, sorted(IN_FLIGHT_STEP))
            ]
        )
        by_slot: dict[str, list[str]] = {name: [] for name in ctl.instruments}
        for instrument, rid in in_flight:
            if instrument in by_slot:
                by_slot[instrument].append(rid)
        stops = await asyncio.gather(
            *(self._stop_one(ctl.instruments[name], rids) for name, rids in by_slot.items())
        )
        self.last = list(stops)
        safe = [x.instrument for x in stops if x.safe]
        unsafe = [x.instrument for x in stops if not x.safe]
        n_cancelled = sum(len(x.cancelled) for x in stops)
        summary = (
            f"{self.reason}: {n_cancelled} step(s) cancelled; safe state reported by "
            f"{', '.join(safe) or 'no instrument'}"
            + (f"; NOT reported by {', '.join(unsafe)}" if unsafe else "")
        )

        def write(s: Session) -> None:
            for x in stops:
                ctl.writer.event(
                    s,
                    "estop.instrument",
                    f"{x.instrument}: cancelled {sorted(x.cancelled) or 'nothing'}; "
                    f"{'safe state: ' if x.safe else ''}{x.description}",
                    instrument=x.instrument,
                    actor=self.actor or "operator",
                    data=x.to_json(),
                )
            if unsafe:
                ctl.alarms.raise_(
                    "estop_unsafe",
                    f"{self.reason}: {', '.join(unsafe)} did not report a safe state; "
                    "check them by hand",
                    data={"instruments": unsafe},
                    session=s,
                )

        await ctl.writer.run(write)
        logger.warning("campaign %s: %s", ctl.name, summary)
        return summary

    async def _stop_one(self, slot: InstrumentSlot, request_ids: list[str]) -> InstrumentStop:
        """Cancel ``request_ids`` on ``slot`` (all at once), then ask for its safe state."""
        out = InstrumentStop(slot.name)

        async def cancel(rid: str) -> None:
            try:
                state = await slot.client.cancel(rid)
                out.cancelled[rid] = state.state.value
            except InstrumentError as exc:
                out.cancelled[rid] = f"{exc.code}: {exc}"
                if exc.code != "unknown_request":
                    slot.orphans.add(rid)  # cancelled again when the instrument answers

        await asyncio.gather(*(cancel(rid) for rid in request_ids))
        try:
            reply = await slot.client.safe_state()
        except InstrumentError as exc:
            out.description = NO_SAFE_STATE if exc.code == UNKNOWN_TYPE else f"{exc.code}: {exc}"
            return out
        out.safe = True
        out.description = reply.description
        for rid in reply.cancelled:
            out.cancelled.setdefault(rid, "cancelled")
        return out

    # ------------------------------------------------------------------ steps

    def holds(self, work: Work) -> bool:
        """Whether a step about to be sent must not be (the stop holds, and the instrument
        does not already have it)."""
        return self.active and not work.adopt

    def claims(self, outcome: object) -> bool:
        """Whether a step's outcome is the stop's to record: the stop holds and the step
        did not complete."""
        if not self.active:
            return False
        return not (isinstance(outcome, RequestState) and outcome.state is RequestStatus.COMPLETED)

    async def record_step(self, slot: InstrumentSlot, work: Work, outcome: object) -> None:
        """Write a step ended by the stop: FAILED ``cancelled: ...`` when the instrument
        confirmed it stopped (INTERRUPTED when not), its experiment INTERRUPTED for an
        operator's decision (nothing is re-run on its own)."""
        ctl = self.ctl
        state = outcome if isinstance(outcome, RequestState) else None
        known = (state is not None and state.terminal) or bool(getattr(outcome, "known", False))
        why = f"cancelled: {self.reason}"
        steps = ctl.steps

        def write(s: Session) -> None:
            if work.step_id is not None:
                ended = StepStatus.FAILED if known else StepStatus.INTERRUPTED
                ctl.writer.end_step(s, work, ended, error=why, state=state)
            steps.move(s, work, ExperimentStatus.INTERRUPTED, f"step {work.index} {why}")
            ctl.alarms.raise_(
                "decision_needed",
                f"experiment {work.experiment_id} step {work.index} on {slot.name} was "
                f"{why}; resolve it with rerun or fail once the campaign is reset",
                instrument=slot.name,
                experiment_id=work.experiment_id,
                data={"request_id": work.request_id, "code": "estop"},
                session=s,
            )

        await ctl.writer.run(write)
        steps.forget(work)
