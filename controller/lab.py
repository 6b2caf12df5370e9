"""One controller's side of a shared lab: which lab units it may take, and taking them.

The :class:`~controller.resources.ResourceManager` plans a campaign's steps as it always
does; for the instruments and resources its campaign shares with others through a lab
(``[lab]`` in the campaign file, :mod:`models.lab`) it asks a :class:`LabGrants`:

- which units of a pool are free in the lab now (not held by a live grant of any campaign,
  not out of service or quarantined), and how many of them campaigns waiting ahead of this
  one have a claim on (:func:`controller.store.lab.ahead_of`);
- to take a step's lab units, all or none, in one transaction
  (:func:`controller.store.lab.take_units`), and to give them back when the step ends.

A controller that runs steps back to back hands its units over to its next step rather
than giving them back and taking them again: when a step ends its units are *returning*
(:meth:`LabGrants.give_back`) and count as free for this campaign's next plan, claims of
campaigns waiting ahead included. A step granted in that plan takes the units it does not
inherit at once, as any grant does, and inherits the others (:meth:`LabGrants.stage`): they
stay held by this controller, and pass to the step in the transaction that writes the step
before it is sent (:meth:`LabGrants.staged_write`), so no other campaign ever sees them
free and no transaction of their own is spent. Returning units the plan did not hand over
are released at once (:meth:`LabGrants.settle`), and on PostgreSQL that release wakes the
other campaigns' controllers (:mod:`controller.store.lab_notify`).

What the lab looks like is read at most every :data:`SNAPSHOT_MAX_AGE_S` (and after each of
our own changes); a stale view only ever makes a take fail and be retried, never grant a
unit twice, because the take itself is a compare-and-set. The grants expire with the
controller's lease and are renewed with it (:mod:`controller.leasing`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from controller.store import transaction
from controller.store.lab import (
    GrantConflictError,
    LabSnapshot,
    WaitEntry,
    adopt_campaign_units,
    ahead_of,
    clear_wait,
    lab_row,
    live_grants,
    release_units,
    set_instrument_state,
    set_wait,
    snapshot,
    take_units,
)
from controller.store.lab_notify import LabListener, lab_channel, notifies
from models.campaign import CampaignSpec
from models.errors import CampaignStateError
from models.lab import LabSpec
from models.status import LabInstrumentState
from models.tables import utcnow

if TYPE_CHECKING:
    from collections.abc import Callable

    from controller.work import InstrumentSlot

logger = logging.getLogger(__name__)

__all__ = ["SNAPSHOT_MAX_AGE_S", "LabGrants"]

SNAPSHOT_MAX_AGE_S = 0.2
"""How old the view of the lab may be when a plan is made, in seconds."""


class LabGrants:
    """The lab units one campaign's controller shares with other campaigns.

    Args:
        sessions: Session factory of the store.
        spec: The campaign (its ``lab`` table names the lab).
        campaign_id: The campaign.
        holder: The controller's lease id (the grants' holder).
        ttl_s: Lifetime of a grant unless renewed (the controller's lease lifetime).

    Raises:
        CampaignStateError: If the campaign names no lab, or the lab is not in the store.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        spec: CampaignSpec,
        campaign_id: int,
        holder: str,
        ttl_s: float,
    ) -> None:
        if spec.lab is None:
            raise CampaignStateError(f"campaign {spec.campaign.name!r} names no lab")
        self._sessions = sessions
        self.campaign_id = campaign_id
        self.holder = holder
        self.ttl_s = ttl_s
        with transaction(sessions, read_only=True) as s:
            row = lab_row(s, spec.lab.name)
            if row is None:
                raise CampaignStateError(
                    f"lab {spec.lab.name!r} is not in the store (run `sdlab lab apply`)"
                )
            self.lab_id = row.id
            lab = LabSpec.model_validate(row.spec)
        mine = {i.name for i in spec.instruments}
        self.instruments = {i.name for i in lab.instruments if i.name in mine}
        """The campaign's instruments that belong to the lab."""
        self.pools = {r.name for r in lab.resources if r.name in set(spec.lab.resources)}
        self.pools |= {f"kind:{i.kind}" for i in lab.instruments if i.name in self.instruments}
        """The lab pools the campaign uses: resource names and ``kind:<kind>``."""
        self._snap = LabSnapshot()
        self._read_at = float("-inf")
        self._wait_written: tuple[tuple[str, ...], datetime | None] = ((), None)
        self._grants: frozenset[tuple[str, str]] = frozenset()
        self._returning: set[str] = set()  # units of ended steps, still held in the store
        self._staged: dict[int, list[str]] = {}  # exp -> the units its step inherits

    # ------------------------------------------------------------------ reading

    def shares(self, pool: str) -> bool:
        """Whether ``pool`` (a resource name or ``kind:<kind>``) belongs to the lab."""
        return pool in self.pools

    def refresh(self, force: bool = False) -> LabSnapshot:
        """Read the lab again if the last view is older than :data:`SNAPSHOT_MAX_AGE_S`."""
        if force or time.monotonic() - self._read_at >= SNAPSHOT_MAX_AGE_S:
            try:
                with transaction(self._sessions, read_only=True) as s:
                    self._snap = snapshot(s, self.lab_id)
            except Exception as exc:  # a stale view only makes takes fail; try again soon
                logger.warning("campaign %d: cannot read the lab: %s", self.campaign_id, exc)
                return self._snap
            self._read_at = time.monotonic()
        return self._snap

    def grants_changed(self) -> bool:
        """Whether any campaign took or gave back a lab unit since the last call.

        One small query (:func:`~controller.store.lab.live_grants`), cheap enough to poll
        often while steps wait; a change makes the next :meth:`refresh` read the lab again.
        A store that cannot be reached counts as no change.
        """
        try:
            with transaction(self._sessions, read_only=True) as s:
                grants = live_grants(s, self.lab_id)
        except Exception as exc:
            logger.warning("campaign %d: cannot read the lab: %s", self.campaign_id, exc)
            return False
        if grants == self._grants:
            return False
        self._grants = grants
        self._read_at = float("-inf")
        return True

    def stale(self) -> None:
        """Read the lab again at the next :meth:`refresh` (a notification said it changed)."""
        self._read_at = float("-inf")

    def unit_free(self, unit: str) -> bool:
        """Whether nobody holds ``unit`` under a live grant and it is not down (a unit this
        controller is giving back counts as free)."""
        if unit in self._snap.down:
            return False
        return unit in self._returning or unit not in self._snap.held

    def free_units(self, pool: str) -> list[str]:
        """The units of ``pool`` free in the lab, in declaration order."""
        return [u for u, p in self._snap.units.items() if p == pool and self.unit_free(u)]

    def ahead(self, pool: str, since: datetime | None) -> list[WaitEntry]:
        """The campaigns waiting on ``pool`` that go before this one."""
        return ahead_of(self._snap, self.campaign_id, pool, since)

    def available(self, pool: str, since: datetime | None) -> int:
        """Units of ``pool`` this campaign may take now: free ones less the claims ahead."""
        return max(0, len(self.free_units(pool)) - len(self.ahead(pool, since)))

    def elsewhere(self, pool: str) -> list[str]:
        """Units of ``pool`` another campaign holds, or that are down, in words."""
        out: list[str] = []
        for unit, p in self._snap.units.items():
            if p != pool:
                continue
            held = self._snap.held.get(unit)
            if held is not None and held.campaign_id != self.campaign_id:
                out.append(f"{unit}, held by campaign {held.campaign}")
            elif unit in self._snap.down:
                out.append(f"{unit}, {self._snap.down[unit]}")
        return out

    def down(self, unit: str) -> str | None:
        """Why a lab instrument may not take steps now (``None``: it may)."""
        return self._snap.down.get(unit)

    def reserved_reason(self, pool: str, since: datetime | None) -> str | None:
        """Why free units of ``pool`` are not ours to take, in words (``None``: they are)."""
        ahead = self.ahead(pool, since)
        if not ahead or len(self.free_units(pool)) > len(ahead):
            return None
        first = ahead[0]
        return f"reserved for campaign {first.campaign} (priority {first.priority}, waiting longer)"

    # ------------------------------------------------------------------ writing

    def take(self, units: list[str], experiment_id: int) -> None:
        """Grant ``units`` to the experiment's step, all or none.

        Raises:
            GrantConflictError: If one is held by another live grant, or the store cannot
                be reached; nothing is taken.
        """
        try:
            if units:
                with transaction(self._sessions) as s:
                    take_units(
                        s,
                        self.lab_id,
                        units,
                        campaign_id=self.campaign_id,
                        holder=self.holder,
                        experiment_id=experiment_id,
                        ttl_s=self.ttl_s,
                    )
                logger.debug("campaign %d: lab units %s granted", self.campaign_id, units)
        except GrantConflictError:
            raise
        except Exception as exc:  # the step waits; the next plan tries again
            logger.warning("campaign %d: cannot take lab units: %s", self.campaign_id, exc)
            raise GrantConflictError(units[0], None, f"store unreachable: {exc}") from exc
        finally:
            self._read_at = float("-inf")

    def release(self, units: Iterable[str]) -> None:
        """Give ``units`` back to the lab (a failure leaves them to expire)."""
        units = list(units)
        if not units:
            return
        try:
            with transaction(self._sessions) as s:
                release_units(s, self.lab_id, units, self.holder)
        except Exception:
            logger.exception("campaign %d: could not release %s", self.campaign_id, units)
        self._read_at = float("-inf")

    # ------------------------------------------------------------------ hand-overs

    def give_back(self, units: Iterable[str]) -> None:
        """A step ended: its ``units`` return to the lab, unless the next plan hands them
        to another step of this campaign (:meth:`stage`). :meth:`settle` releases what is
        left; until then the units count as free in this campaign's plans only."""
        units = set(units)
        if units:
            self._returning |= units
            self._read_at = float("-inf")  # plan on a fresh view: who waits ahead now

    def stage(self, units: list[str], experiment_id: int) -> None:
        """Grant ``units`` to the experiment's step, inheriting those that are returning.

        The units it does not inherit are taken now, as :meth:`take` does (another
        campaign could take them before the step is written); the inherited ones stay held
        by this controller all along and pass to the step in the step's own transaction
        (:meth:`staged_write`). All or none: if a unit cannot be taken, nothing is, and the
        returning units stay returning.

        Raises:
            GrantConflictError: If a unit not inherited is held by another live grant, or
                the store cannot be reached.
        """
        inherited = [u for u in units if u in self._returning]
        self.take([u for u in units if u not in self._returning], experiment_id)
        self._returning -= set(inherited)
        self._staged[experiment_id] = inherited

    def staged_write(self, experiment_id: int) -> Callable[[Session], None] | None:
        """What the step's transaction runs to pass it the units it inherits (``None``:
        none).

        The returned function releases the inherited units and takes them again for the
        step by compare-and-set (one transaction: no other campaign sees them free); it
        raises :class:`GrantConflictError` if one is held by another live grant (this
        controller's grant expired meanwhile), and the caller's transaction, rolled back,
        changes nothing.
        """
        inherited = self._staged.get(experiment_id)
        if not inherited:
            return None
        lab_id, campaign_id, holder, ttl_s = self.lab_id, self.campaign_id, self.holder, self.ttl_s

        def write(s: Session) -> None:
            release_units(s, lab_id, inherited, holder, notify=False)
            take_units(
                s,
                lab_id,
                inherited,
                campaign_id=campaign_id,
                holder=holder,
                experiment_id=experiment_id,
                ttl_s=ttl_s,
            )

        return write

    def committed(self, experiment_id: int) -> None:
        """The step's transaction took its staged units."""
        self._staged.pop(experiment_id, None)
        self._read_at = float("-inf")

    def unstage(self, experiment_id: int, units: list[str]) -> list[str]:
        """Of a step's lab ``units``, those this controller holds in the store: all of them
        (a step that never took its inherited units still holds them as their last step
        did)."""
        self._staged.pop(experiment_id, None)
        return list(units)

    def settle(self) -> list[str]:
        """Release the returning units no step inherited (one transaction); returns them."""
        units = sorted(self._returning)
        self._returning.clear()
        self.release(units)
        return units

    def listener(self) -> LabListener | None:
        """A listener that wakes this controller when the lab's grants change (PostgreSQL;
        ``None`` on SQLite, which is polled)."""
        with transaction(self._sessions, read_only=True) as s:
            if not notifies(s):
                return None
            channel = lab_channel(s, self.lab_id)
            engine = s.get_bind()
        assert isinstance(engine, Engine)
        return LabListener(engine, channel)

    def adopt(self) -> dict[str, int | None]:
        """Take over the grants an earlier controller of this campaign left.

        Returns:
            Each unit now held, with its experiment.
        """
        with transaction(self._sessions) as s:
            held = adopt_campaign_units(s, self.lab_id, self.campaign_id, self.holder, self.ttl_s)
        self._read_at = float("-inf")
        return held

    def wait_on(self, pools: Iterable[str], since: datetime | None) -> None:
        """Record the pools the campaign waits on (written only when they change)."""
        key = (tuple(sorted(set(pools))), since if pools else None)
        if key == self._wait_written:
            return
        with transaction(self._sessions) as s:
            if key[0] and since is not None:
                set_wait(
                    s, self.lab_id, self.campaign_id, self.holder, list(key[0]), since, self.ttl_s
                )
            else:
                clear_wait(s, self.campaign_id)
        self._wait_written = key

    def record_slot(self, s: Session, slot: InstrumentSlot) -> None:
        """Record what the controller made of a lab instrument (an operator took it out of
        service or put it back, its breaker quarantined it) for every campaign of the lab."""
        if not slot.in_service:
            self.record_state(s, slot.name, LabInstrumentState.OUT_OF_SERVICE, slot.reason)
        elif slot.quarantined_until is not None:
            left = max(0.0, slot.quarantined_until - time.monotonic())
            self.record_state(s, slot.name, LabInstrumentState.QUARANTINED, slot.reason, left)
        else:
            self.record_state(s, slot.name, LabInstrumentState.IN_SERVICE, None)

    def record_state(
        self,
        s: Session,
        instrument: str,
        state: LabInstrumentState,
        reason: str | None,
        for_s: float | None = None,
    ) -> None:
        """Record a lab instrument's state for every campaign (in the caller's transaction).

        Args:
            s: Open session.
            instrument: The lab instrument.
            state: Its new state.
            reason: Why, for the operator.
            for_s: How long a quarantine lasts, in seconds.
        """
        until = utcnow() + timedelta(seconds=for_s) if for_s is not None else None
        set_instrument_state(s, self.lab_id, instrument, state, reason=reason, until=until)
        self._read_at = float("-inf")
