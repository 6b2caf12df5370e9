"""Instrument health: heartbeats, the circuit breaker, and the instruments table.

Each instrument is probed every ``reliability.heartbeat_s`` on a socket of its own (so a
backed-up action channel cannot hide a live instrument, nor a dead one look alive). An
instrument that has not answered for ``silent_after_s`` is UNKNOWN, never IDLE: nothing new
is sent to it and an alarm is raised; when it answers again it is back.

Consecutive faults (a transport error, a garbled reply, an action that timed out, a result
that breaks the action's schema, an instrument-side failure it calls retryable) open a
circuit breaker at ``quarantine_after``: the instrument is QUARANTINED for ``quarantine_s``,
its work goes to other instruments of its kind (or waits), and an alarm is raised. When the
quarantine ends and a probe succeeds it is half-open: one more fault quarantines it again,
one success closes the breaker (after Nygard's "Release It!" circuit breaker).

The ``instruments`` table holds the present view of each instrument for the dashboard; it is
written when an instrument's state changes and at most every ``ROW_REFRESH_S`` otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from controller.alarms import Alarms
from controller.store import add_event, transaction, upsert_instrument
from controller.work import InstrumentSlot
from instruments.client import InstrumentClient
from instruments.driver import InstrumentDescription
from instruments.protocol import UNKNOWN_REQUEST
from models.campaign import ReliabilitySpec
from models.errors import InstrumentError
from models.status import InstrumentState

logger = logging.getLogger(__name__)

ROW_REFRESH_S = 10.0
"""Longest interval between two writes of an instrument's row while nothing changes."""


class HealthMonitor:
    """Keeps the controller's view of its instruments' health.

    Args:
        slots: The controller's instruments, by name.
        spec: The campaign's ``[reliability]`` table.
        campaign_id: The campaign in the store.
        sessions: Session factory of the store.
        alarms: Where alarms go.
        changed: Awaited after a change of availability (wakes the workers).
        described: Called when an instrument that never answered describes itself.
    """

    def __init__(
        self,
        slots: dict[str, InstrumentSlot],
        spec: ReliabilitySpec,
        campaign_id: int,
        sessions: sessionmaker[Session],
        alarms: Alarms,
        changed: Callable[[], Awaitable[None]],
        described: Callable[[InstrumentSlot], None],
    ) -> None:
        self.slots = slots
        self.spec = spec
        self.campaign_id = campaign_id
        self._sessions = sessions
        self.alarms = alarms
        self._changed = changed
        self._described = described
        self._written: dict[str, tuple[InstrumentState, int, float]] = {}

    # ------------------------------------------------------------------ what steps report

    def seen(self, slot: InstrumentSlot) -> None:
        """The instrument answered (any reply counts)."""
        slot.last_seen = time.monotonic()
        if slot.silent and slot.description is not None:
            slot.silent = False
            self._event(slot, "instrument.back", f"{slot.name} answers again")

    def succeeded(self, slot: InstrumentSlot) -> None:
        """A step on the instrument finished as it should: the breaker closes."""
        self.seen(slot)
        slot.faults = 0

    def fault(self, slot: InstrumentSlot, code: str, message: str) -> None:
        """Count a fault of the instrument; quarantine it at ``quarantine_after`` in a row."""
        slot.faults += 1
        with transaction(self._sessions) as s:
            add_event(
                s,
                "instrument.fault",
                f"{slot.name}: {code}: {message} ({slot.faults} in a row)",
                campaign_id=self.campaign_id,
                instrument=slot.name,
                data={"code": code, "consecutive": slot.faults},
            )
            if slot.faults >= self.spec.quarantine_after and slot.quarantined_until is None:
                slot.quarantined_until = time.monotonic() + self.spec.quarantine_s
                slot.reason = f"{slot.faults} faults in a row, last {code}: {message}"
                self.alarms.raise_(
                    "instrument_quarantined",
                    f"{slot.name} quarantined for {self.spec.quarantine_s:g} s after "
                    f"{slot.reason}; its work goes to other {slot.kind} instruments or waits",
                    instrument=slot.name,
                    data={"faults": slot.faults, "code": code},
                    session=s,
                )
                self._write(s, slot)

    # ------------------------------------------------------------------ operator

    async def set_service(self, slot: InstrumentSlot, in_service: bool, reason: str) -> None:
        """Take an instrument out of service, or put it back (an operator's command)."""
        slot.in_service = in_service
        slot.reason = None if in_service else reason
        if in_service:
            slot.quarantined_until = None
            slot.faults = 0
        with transaction(self._sessions) as s:
            self._write(s, slot)
        await self._changed()

    # ------------------------------------------------------------------ probing

    async def watch(self, slot: InstrumentSlot) -> None:
        """Probe one instrument forever (cancel the task to stop)."""
        probe = InstrumentClient(
            slot.address,
            name=slot.name,
            timeout_s=max(0.5, min(self.spec.heartbeat_s, self.spec.silent_after_s / 2)),
            curve=slot.curve,
            insecure=slot.insecure,
        )
        try:
            while True:
                try:
                    before = slot.state
                    await self._probe(slot, probe)
                    self._check_silent(slot)
                    self._check_quarantine(slot)
                    if slot.state != before:
                        await self._changed()
                    self._maybe_write(slot)
                except Exception:  # a store hiccup must not stop the heartbeats
                    logger.exception("heartbeat of %s failed", slot.name)
                await asyncio.sleep(self.spec.heartbeat_s)
        finally:
            await probe.close()

    async def _probe(self, slot: InstrumentSlot, probe: InstrumentClient) -> None:
        try:
            if slot.description is None:
                desc: InstrumentDescription = await probe.describe()
                slot.description = desc
                self._described(slot)
                self._event(
                    slot,
                    "instrument.connected",
                    f"{slot.name} ({desc.driver} {desc.driver_version}) answers at {slot.address}",
                )
            else:
                await probe.heartbeat()
        except InstrumentError as exc:
            logger.debug("heartbeat of %s failed: %s", slot.name, exc)
            return
        self.seen(slot)
        for rid in sorted(slot.orphans):
            try:
                state = await probe.cancel(rid)
            except InstrumentError as exc:
                if exc.code != UNKNOWN_REQUEST:
                    continue  # try again at the next heartbeat
                state = None
            slot.orphans.discard(rid)
            self._event(
                slot,
                "instrument.orphan_cancelled",
                f"{slot.name}: request {rid}, given up on earlier, is "
                f"{state.state if state else 'unknown to it'} now",
            )

    def _check_silent(self, slot: InstrumentSlot) -> None:
        if slot.silent or slot.last_seen is None:
            return
        quiet_s = time.monotonic() - slot.last_seen
        if quiet_s > self.spec.silent_after_s:
            slot.silent = True
            self.alarms.raise_(
                "instrument_silent",
                f"{slot.name} has not answered for {quiet_s:.0f} s: state UNKNOWN, "
                "nothing new is sent to it",
                instrument=slot.name,
                data={"quiet_s": round(quiet_s, 1)},
            )

    def _check_quarantine(self, slot: InstrumentSlot) -> None:
        until = slot.quarantined_until
        if until is None or time.monotonic() < until or slot.silent:
            return
        slot.quarantined_until = None
        slot.faults = self.spec.quarantine_after - 1  # half-open: one more fault re-opens
        slot.reason = None
        self._event(
            slot,
            "instrument.released",
            f"{slot.name} answers after its quarantine: on trial (one more fault "
            "quarantines it again)",
        )

    # ------------------------------------------------------------------ the table

    def write_all(self) -> None:
        """Write every instrument's row (at start, and when the campaign stops)."""
        with transaction(self._sessions) as s:
            for slot in self.slots.values():
                self._write(s, slot)

    def _maybe_write(self, slot: InstrumentSlot) -> None:
        last = self._written.get(slot.name)
        now = time.monotonic()
        unchanged = last is not None and last[:2] == (slot.state, slot.faults)
        if unchanged and last is not None and now - last[2] < ROW_REFRESH_S:
            return
        with transaction(self._sessions) as s:
            self._write(s, slot)

    def _write(self, s: Session, slot: InstrumentSlot) -> None:
        last_seen = None
        if slot.last_seen is not None:
            ago = time.monotonic() - slot.last_seen
            last_seen = datetime.now(UTC) - timedelta(seconds=ago)
        upsert_instrument(
            s,
            self.campaign_id,
            slot.name,
            kind=slot.kind,
            address=slot.address,
            state=slot.state,
            in_service=slot.in_service,
            consecutive_faults=slot.faults,
            reason=slot.reason,
            driver=slot.description.driver if slot.description else None,
            last_seen_at=last_seen,
        )
        self._written[slot.name] = (slot.state, slot.faults, time.monotonic())

    def _event(self, slot: InstrumentSlot, kind: str, message: str) -> None:
        logger.info("%s", message)
        with transaction(self._sessions) as s:
            add_event(s, kind, message, campaign_id=self.campaign_id, instrument=slot.name)
            self._write(s, slot)
