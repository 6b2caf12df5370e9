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

Each heartbeat is read, not only awaited. Its ``uptime_s`` going down means the server
restarted: whatever the steps had in flight on their connection is lost, so the step client
is reconnected and its waiting calls sent again at once (what a timeout would do some 11 s
later), and the instrument is described again. Its ``time`` is compared with this clock;
a skew beyond ``max_clock_skew_s`` raises an alarm (the instrument's timestamps go into the
record). A description whose ``name`` is not the campaign's name for the instrument is
recorded as an ``instrument.name_mismatch`` event.

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
from instruments.client import HeartbeatReport, InstrumentClient
from instruments.driver import InstrumentDescription
from instruments.protocol import UNKNOWN_REQUEST
from models.campaign import ReliabilitySpec
from models.errors import InstrumentError
from models.status import InstrumentState

logger = logging.getLogger(__name__)

ROW_REFRESH_S = 10.0
"""Longest interval between two writes of an instrument's row while nothing changes."""

MAX_CLOCK_SKEW_S = 2.0
"""Largest difference between an instrument's clock and the controller's before an alarm,
in seconds."""


class HealthMonitor:
    """Keeps the controller's view of its instruments' health.

    Args:
        slots: The controller's instruments, by name.
        spec: The campaign's ``[reliability]`` table.
        campaign_id: The campaign in the store.
        sessions: Session factory of the store.
        alarms: Where alarms go.
        changed: Awaited after a change of availability (wakes the workers).
        described: Called when an instrument describes itself for the first time, or
            differently after a restart.
        max_clock_skew_s: Alarm when an instrument's clock is further off than this, in
            seconds.
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
        max_clock_skew_s: float = MAX_CLOCK_SKEW_S,
    ) -> None:
        self.slots = slots
        self.spec = spec
        self.campaign_id = campaign_id
        self._sessions = sessions
        self.alarms = alarms
        self._changed = changed
        self._described = described
        self.max_clock_skew_s = max_clock_skew_s
        self._written: dict[str, tuple[InstrumentState, int, float]] = {}
        self.lab_state: Callable[[Session, InstrumentSlot], None] | None = None
        """Records a lab instrument's quarantine or service change for the whole lab."""
        self._uptime_s: dict[str, float] = {}  # last uptime each instrument reported
        self._boot_id: dict[str, str] = {}  # last boot id each instrument reported
        self._skewed: set[str] = set()  # instruments whose clock skew is alarmed
        self._names_checked: set[str] = set()

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
                if self.lab_state is not None:
                    self.lab_state(s, slot)

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
            if self.lab_state is not None:
                self.lab_state(s, slot)
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
                report = await probe.heartbeat_report()
                if self._restarted(slot, report):
                    await self._redescribe(slot, probe)
                self._check_clock(slot, report)
        except InstrumentError as exc:
            logger.debug("heartbeat of %s failed: %s", slot.name, exc)
            return
        finally:
            self._check_name(slot)
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

    def _restarted(self, slot: InstrumentSlot, report: HeartbeatReport) -> bool:
        """Notice a restarted server and reconnect the steps to it.

        A server that sends a ``boot_id`` restarted when it sends another one; one that sends
        only ``uptime_s`` restarted when its uptime went down (which misses a restart if the
        new server has been up longer than the old one was by the time it is next heard).
        """
        beat = report.beat
        uptime_s = beat.uptime_s
        before_s = self._uptime_s.get(slot.name)
        before_boot = self._boot_id.get(slot.name)
        if uptime_s is not None:
            self._uptime_s[slot.name] = uptime_s
        if beat.boot_id is not None:
            self._boot_id[slot.name] = beat.boot_id
        if beat.boot_id is not None and before_boot is not None:
            restarted = beat.boot_id != before_boot
        else:
            restarted = uptime_s is not None and before_s is not None and uptime_s < before_s
        if not restarted:
            return False
        # What went to the old server on the steps' connection will never be answered:
        # send it again now rather than at the call's timeout. Every request is idempotent;
        # a request cut off mid-action comes back failed "interrupted" from the journal, or
        # unknown, and the step is retried or failed as for any lost request.
        in_flight = slot.client.reconnect(f"{slot.name} restarted")
        how = (
            f"boot id {before_boot} -> {beat.boot_id}"
            if beat.boot_id is not None and before_boot is not None
            else f"uptime {before_s:.1f} s, now {uptime_s:.1f} s"
        )
        message = (
            f"{slot.name} restarted ({how}): reconnected, {in_flight} call(s) in flight sent again"
        )
        logger.warning("%s", message)
        with transaction(self._sessions) as s:
            add_event(
                s,
                "instrument.restarted",
                message,
                campaign_id=self.campaign_id,
                instrument=slot.name,
                data={
                    "uptime_s": uptime_s,
                    "previous_uptime_s": before_s,
                    "boot_id": beat.boot_id,
                    "previous_boot_id": before_boot,
                },
            )
        return True

    async def _redescribe(self, slot: InstrumentSlot, probe: InstrumentClient) -> None:
        """Describe a restarted instrument again: it may have come back with other limits."""
        desc = await probe.describe()
        if desc == slot.description:
            return
        slot.description = desc
        self._names_checked.discard(slot.name)
        self._described(slot)
        self._event(
            slot,
            "instrument.redescribed",
            f"{slot.name} came back as {desc.driver} {desc.driver_version} with "
            f"{len(desc.actions)} action(s); the safety gate uses the new description",
        )

    def _check_clock(self, slot: InstrumentSlot, report: HeartbeatReport) -> None:
        skew_s = report.clock_skew_s
        if skew_s is None:
            return
        if abs(skew_s) <= self.max_clock_skew_s:
            if slot.name in self._skewed:
                self._skewed.discard(slot.name)
                self._event(
                    slot, "instrument.clock_ok", f"{slot.name}: clock within {skew_s:+.1f} s again"
                )
            return
        if slot.name in self._skewed:
            return
        self._skewed.add(slot.name)
        self.alarms.raise_(
            "instrument_clock_skew",
            f"{slot.name}'s clock is {abs(skew_s):.1f} s "
            f"{'ahead of' if skew_s > 0 else 'behind'} the controller's (more than "
            f"{self.max_clock_skew_s:g} s): its timestamps in the record are off by as much",
            instrument=slot.name,
            data={"skew_s": round(skew_s, 3), "round_trip_s": round(report.round_trip_s, 4)},
        )

    def _check_name(self, slot: InstrumentSlot) -> None:
        desc = slot.description
        if desc is None or slot.name in self._names_checked:
            return
        self._names_checked.add(slot.name)
        if desc.name == slot.name:
            return
        message = (
            f"{slot.name} at {slot.address} describes itself as {desc.name!r}: is this the "
            "instrument the campaign means? (the campaign's name is used)"
        )
        logger.warning("%s", message)
        with transaction(self._sessions) as s:
            add_event(
                s,
                "instrument.name_mismatch",
                message,
                campaign_id=self.campaign_id,
                instrument=slot.name,
                data={"described_as": desc.name, "address": slot.address},
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
