"""The lab in the store: its file, its instruments' state, and grants of its units.

A lab's instruments and resource units are *units* (one :class:`~models.tables.LabUnitRow`
each) that the controllers of several campaigns take for their steps. A grant is a
compare-and-set, as the controller lease is (:mod:`controller.store.lease`): an ``UPDATE``
whose ``WHERE`` says the unit is free or its grant has expired, so two controllers racing
for one unit cannot both win, on SQLite or PostgreSQL. :func:`take_units` takes all the
units of a step in the caller's transaction, or raises and takes none (the caller's
transaction is rolled back): a step never holds some of what it needs while it waits for
the rest, across campaigns as within one.

A grant names its holder (the campaign, and the controller's lease id) and expires with
the controller's lease: the controller renews both together (:func:`renew_holder`) and
clears its grants when a step ends; a killed controller's grants expire and return to the
lab. Campaigns that wait for units leave a :class:`~models.tables.LabWaitRow`, so the next
free unit goes to the campaign ahead (higher priority, then waiting longer): see
:func:`ahead_of`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from controller.store.lab_notify import notify_lab
from models.errors import CampaignStateError, InvalidCampaignError, Problem
from models.lab import LabSpec
from models.status import LabInstrumentState
from models.tables import (
    CampaignRow,
    LabInstrumentRow,
    LabRow,
    LabUnitRow,
    LabWaitRow,
    utcnow,
)

logger = logging.getLogger(__name__)

__all__ = [
    "GrantConflictError",
    "LabSnapshot",
    "UnitHolder",
    "WaitEntry",
    "adopt_campaign_units",
    "ahead_of",
    "apply_lab",
    "clear_wait",
    "get_lab",
    "lab_priority",
    "lab_row",
    "live_grants",
    "release_holder",
    "release_units",
    "renew_holder",
    "set_instrument_state",
    "set_priority",
    "set_wait",
    "snapshot",
    "take_units",
]


class GrantConflictError(CampaignStateError):
    """A lab unit a step needs is held by another live grant (nothing was taken).

    Attributes:
        unit: The unit.
        campaign: The campaign holding it, if known.
        why: Another reason it could not be taken (the store could not be reached).
    """

    def __init__(self, unit: str, campaign: str | None, why: str | None = None) -> None:
        self.unit = unit
        self.campaign = campaign
        self.why = why
        by = f"held by campaign {campaign}" if campaign else "held by another campaign"
        super().__init__(f"lab unit {unit}: {why or by}")

    def __reduce__(
        self,
    ) -> tuple[type[GrantConflictError], tuple[str, str | None, str | None]]:
        return (type(self), (self.unit, self.campaign, self.why))


# ---------------------------------------------------------------------- the lab file


def lab_row(s: Session, name: str) -> LabRow | None:
    """The lab called ``name``, or ``None``."""
    return s.scalars(select(LabRow).where(LabRow.name == name)).first()


def get_lab(s: Session, name: str) -> tuple[LabRow, LabSpec] | None:
    """The lab called ``name`` with its spec, or ``None`` if it was never applied."""
    row = lab_row(s, name)
    return None if row is None else (row, LabSpec.model_validate(row.spec))


def apply_lab(s: Session, spec: LabSpec, source: str | None = None) -> tuple[LabRow, list[str]]:
    """Record a lab file: create the lab, or update it to the file's content.

    Instruments and units the file adds are created; those it no longer has are removed,
    unless a live grant holds a unit (then nothing changes and the error says which).
    Instrument states (out of service, quarantined) are kept.

    Returns:
        The lab row and what changed, in words (empty: it was recorded already).

    Raises:
        InvalidCampaignError: If a unit the file removes is held now (key path
            ``instruments`` or ``resources``).
    """
    now = utcnow()
    row = lab_row(s, spec.lab.name)
    changes: list[str] = []
    data = spec.model_dump(mode="json")
    if row is None:
        row = LabRow(name=spec.lab.name, spec=data, spec_hash=spec.spec_hash(), source=source)
        s.add(row)
        s.flush()
        changes.append(f"lab {spec.lab.name} created")
    elif row.spec_hash != spec.spec_hash():
        row.spec, row.spec_hash, row.source = data, spec.spec_hash(), source
        changes.append(f"lab {spec.lab.name} updated")
    units = spec.units()
    existing = {u.unit: u for u in s.scalars(select(LabUnitRow).where(LabUnitRow.lab_id == row.id))}
    for name, unit in existing.items():
        if name in units and units[name] == unit.pool:
            continue
        if unit.holder is not None and unit.expires_at is not None and unit.expires_at > now:
            table = "instruments" if unit.pool.startswith("kind:") else "resources"
            raise InvalidCampaignError(
                source,
                [Problem((table,), f"unit {name!r} is held by a live grant; apply again later")],
            )
        s.delete(unit)
        changes.append(f"unit {name} removed")
    s.flush()
    for name, pool in units.items():
        if name not in existing or existing[name].pool != pool:
            s.add(LabUnitRow(lab_id=row.id, unit=name, pool=pool))
            changes.append(f"unit {name} ({pool}) added")
    insts = {
        i.name: i
        for i in s.scalars(select(LabInstrumentRow).where(LabInstrumentRow.lab_id == row.id))
    }
    for name, old in insts.items():
        if spec.instrument(name) is None:
            s.delete(old)
    for inst in spec.instruments:
        irow = insts.get(inst.name) or LabInstrumentRow(
            lab_id=row.id, name=inst.name, state=LabInstrumentState.IN_SERVICE
        )
        if inst.name not in insts:
            s.add(irow)
        irow.kind, irow.address, irow.gateway = inst.kind, str(inst.address), inst.gateway
    s.flush()
    return row, changes


def lab_priority(s: Session, name: str) -> int:
    """The priority a campaign joining lab ``name`` starts with (its ``defaults.priority``)."""
    row = lab_row(s, name)
    return 0 if row is None else int(row.spec.get("defaults", {}).get("priority", 0))


# ---------------------------------------------------------------------- operators


def set_priority(s: Session, campaign: str, priority: int) -> CampaignRow:
    """Set a campaign's priority (higher goes first when campaigns wait for lab units).

    Raises:
        CampaignStateError: If there is no such campaign.
    """
    row = s.scalars(select(CampaignRow).where(CampaignRow.name == campaign)).first()
    if row is None:
        raise CampaignStateError(f"campaign {campaign!r} is not in the store")
    row.priority = priority
    return row


def set_instrument_state(
    s: Session,
    lab_id: int,
    name: str,
    state: LabInstrumentState,
    *,
    reason: str | None = None,
    until: datetime | None = None,
    actor: str = "controller",
) -> LabInstrumentRow:
    """Record a lab instrument's state for every campaign of the lab.

    Raises:
        CampaignStateError: If the lab has no such instrument.
    """
    row = s.scalars(
        select(LabInstrumentRow).where(
            LabInstrumentRow.lab_id == lab_id, LabInstrumentRow.name == name
        )
    ).first()
    if row is None:
        raise CampaignStateError(f"the lab has no instrument {name!r}")
    row.state = state
    row.reason = None if state == LabInstrumentState.IN_SERVICE else reason
    row.until = until if state == LabInstrumentState.QUARANTINED else None
    row.changed_by = actor
    notify_lab(s, lab_id)  # a station back in service may be taken now
    return row


# ---------------------------------------------------------------------- what is held


@dataclass(frozen=True)
class UnitHolder:
    """Who holds a lab unit under a live grant."""

    campaign_id: int | None
    campaign: str
    experiment_id: int | None
    holder: str


@dataclass(frozen=True)
class WaitEntry:
    """A campaign waiting for lab units."""

    campaign_id: int
    campaign: str
    priority: int
    since: datetime
    pools: tuple[str, ...]

    def rank(self) -> tuple[int, datetime, int]:
        """Sort key: higher priority first, then waiting longer, then older campaign."""
        return (-self.priority, self.since, self.campaign_id)


@dataclass
class LabSnapshot:
    """The lab's units as read in one transaction.

    Attributes:
        units: Every unit with its pool, in declaration order.
        held: The units under a live grant, with their holders.
        waits: The live waits of every campaign.
        down: Instruments out of service or quarantined now, with the reason.
        priority: The priority of each campaign that holds or waits.
    """

    units: dict[str, str] = field(default_factory=dict)
    held: dict[str, UnitHolder] = field(default_factory=dict)
    waits: list[WaitEntry] = field(default_factory=list)
    down: dict[str, str] = field(default_factory=dict)
    priority: dict[int, int] = field(default_factory=dict)


def snapshot(s: Session, lab_id: int, now: datetime | None = None) -> LabSnapshot:
    """Read the lab's units, live grants, waits and instrument states."""
    now = now or utcnow()
    snap = LabSnapshot()
    names: dict[int, str] = {}
    prio: dict[int, int] = {}
    for cid, cname, cprio in s.execute(
        select(CampaignRow.id, CampaignRow.name, CampaignRow.priority)
    ):
        names[cid], prio[cid] = cname, cprio
    for u in s.scalars(
        select(LabUnitRow).where(LabUnitRow.lab_id == lab_id).order_by(LabUnitRow.id)
    ):
        snap.units[u.unit] = u.pool
        if u.holder is not None and u.expires_at is not None and u.expires_at > now:
            owner = u.campaign_id
            label = names.get(owner, "?") if owner is not None else "?"
            snap.held[u.unit] = UnitHolder(owner, label, u.experiment_id, u.holder)
    for w in s.scalars(select(LabWaitRow).where(LabWaitRow.lab_id == lab_id)):
        if w.expires_at > now:
            p = prio.get(w.campaign_id, 0)
            snap.waits.append(
                WaitEntry(w.campaign_id, names.get(w.campaign_id, "?"), p, w.since, tuple(w.pools))
            )
    for i in s.scalars(select(LabInstrumentRow).where(LabInstrumentRow.lab_id == lab_id)):
        if i.state == LabInstrumentState.OUT_OF_SERVICE:
            snap.down[i.name] = f"out of service ({i.reason or 'no reason given'})"
        elif i.state == LabInstrumentState.QUARANTINED and (i.until is None or i.until > now):
            snap.down[i.name] = f"quarantined ({i.reason or 'repeated faults'})"
    snap.priority = prio
    return snap


def live_grants(s: Session, lab_id: int, now: datetime | None = None) -> frozenset[tuple[str, str]]:
    """The lab's live grants as ``(unit, holder)`` pairs: one small query.

    What a waiting controller polls: the set changes when any campaign takes or gives back
    a unit, or a grant expires, and not when a grant is merely renewed.
    """
    now = now or utcnow()
    rows = s.execute(
        select(LabUnitRow.unit, LabUnitRow.holder).where(
            LabUnitRow.lab_id == lab_id,
            LabUnitRow.holder.is_not(None),
            LabUnitRow.expires_at > now,
        )
    )
    return frozenset((unit, str(holder)) for unit, holder in rows)


def ahead_of(
    snap: LabSnapshot, campaign_id: int, pool: str, since: datetime | None
) -> list[WaitEntry]:
    """The other campaigns waiting on ``pool`` that go before ``campaign_id``.

    Args:
        snap: The lab as read.
        campaign_id: The campaign asking.
        pool: The pool (``kind:<kind>`` or a resource name).
        since: Since when the campaign has waited (``None``: it starts waiting now).
    """
    me = WaitEntry(
        campaign_id, "", snap.priority.get(campaign_id, 0), since or utcnow(), (pool,)
    ).rank()
    return sorted(
        (
            w
            for w in snap.waits
            if w.campaign_id != campaign_id and pool in w.pools and w.rank() < me
        ),
        key=WaitEntry.rank,
    )


# ---------------------------------------------------------------------- grants


def _free_or_expired(now: datetime):  # type: ignore[no-untyped-def]
    return or_(LabUnitRow.holder.is_(None), LabUnitRow.expires_at <= now)


def take_units(
    s: Session,
    lab_id: int,
    units: list[str],
    *,
    campaign_id: int,
    holder: str,
    experiment_id: int | None,
    ttl_s: float,
) -> None:
    """Grant ``units`` to one step, all of them or none.

    Each unit is taken by compare-and-set; if one is held by another live grant this
    raises, and the caller's transaction (which must then be rolled back) takes nothing.

    Raises:
        GrantConflictError: If a unit is held by a live grant (or is not a unit of the lab).
    """
    now = utcnow()
    for unit in units:
        done = s.execute(
            update(LabUnitRow)
            .where(LabUnitRow.lab_id == lab_id, LabUnitRow.unit == unit, _free_or_expired(now))
            .values(
                campaign_id=campaign_id,
                holder=holder,
                experiment_id=experiment_id,
                granted_at=now,
                expires_at=now + timedelta(seconds=ttl_s),
            )
            .execution_options(synchronize_session=False)
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            row = s.scalars(
                select(LabUnitRow).where(LabUnitRow.lab_id == lab_id, LabUnitRow.unit == unit)
            ).first()
            name = None
            if row is not None and row.campaign_id is not None:
                name = s.scalar(select(CampaignRow.name).where(CampaignRow.id == row.campaign_id))
            raise GrantConflictError(unit, name)


def release_units(
    s: Session, lab_id: int, units: list[str], holder: str, *, notify: bool = True
) -> int:
    """Give back ``units`` held by ``holder``; returns how many it held.

    Args:
        s: Open session.
        lab_id: The lab.
        units: The units.
        holder: Their holder (units it does not hold are left alone).
        notify: Wake the lab's waiting controllers when ``s`` commits
            (:func:`~controller.store.lab_notify.notify_lab`); ``False`` when the same
            transaction takes the units again (a hand-over: nothing is freed).
    """
    if not units:
        return 0
    done = s.execute(
        update(LabUnitRow)
        .where(
            LabUnitRow.lab_id == lab_id,
            LabUnitRow.unit.in_(units),
            LabUnitRow.holder == holder,
        )
        .values(campaign_id=None, holder=None, experiment_id=None, granted_at=None, expires_at=None)
        .execution_options(synchronize_session=False)
    )
    freed = int(done.rowcount)  # type: ignore[attr-defined]
    if freed and notify:
        notify_lab(s, lab_id)
    return freed


def renew_holder(s: Session, holder: str, ttl_s: float) -> int:
    """Extend every grant and wait of ``holder`` by ``ttl_s`` from now (with its lease).

    Returns:
        The number of grants renewed.
    """
    now = utcnow()
    until = now + timedelta(seconds=ttl_s)
    done = s.execute(
        update(LabUnitRow)
        .where(LabUnitRow.holder == holder, LabUnitRow.expires_at > now)
        .values(expires_at=until)
        .execution_options(synchronize_session=False)
    )
    s.execute(
        update(LabWaitRow)
        .where(LabWaitRow.holder == holder)
        .values(expires_at=until)
        .execution_options(synchronize_session=False)
    )
    return int(done.rowcount)  # type: ignore[attr-defined]


def release_holder(s: Session, holder: str) -> int:
    """Give back every grant and wait of ``holder`` (its controller stops)."""
    labs = set(s.scalars(select(LabUnitRow.lab_id).where(LabUnitRow.holder == holder)))
    labs |= set(s.scalars(select(LabWaitRow.lab_id).where(LabWaitRow.holder == holder)))
    for lab_id in sorted(labs):
        notify_lab(s, lab_id)
    done = s.execute(
        update(LabUnitRow)
        .where(LabUnitRow.holder == holder)
        .values(campaign_id=None, holder=None, experiment_id=None, granted_at=None, expires_at=None)
        .execution_options(synchronize_session=False)
    )
    s.execute(delete(LabWaitRow).where(LabWaitRow.holder == holder))
    return int(done.rowcount)  # type: ignore[attr-defined]


def adopt_campaign_units(
    s: Session, lab_id: int, campaign_id: int, holder: str, ttl_s: float
) -> dict[str, int | None]:
    """Take over the grants an earlier controller of the campaign left (still live or not).

    Only a controller holding the campaign's lease may call this: the lease says the
    earlier one is gone or fenced. A unit another campaign took since is not touched.

    Returns:
        Each unit now held, with the experiment it was granted to.
    """
    now = utcnow()
    s.execute(
        update(LabUnitRow)
        .where(
            LabUnitRow.lab_id == lab_id,
            LabUnitRow.campaign_id == campaign_id,
            LabUnitRow.holder.is_not(None),
        )
        .values(holder=holder, expires_at=now + timedelta(seconds=ttl_s))
        .execution_options(synchronize_session=False)
    )
    rows = s.execute(
        select(LabUnitRow.unit, LabUnitRow.experiment_id).where(
            and_(LabUnitRow.lab_id == lab_id, LabUnitRow.holder == holder)
        )
    )
    return {unit: exp for unit, exp in rows}


# ---------------------------------------------------------------------- waits


def set_wait(
    s: Session,
    lab_id: int,
    campaign_id: int,
    holder: str,
    pools: list[str],
    since: datetime,
    ttl_s: float,
) -> None:
    """Record that the campaign waits on ``pools`` since ``since`` (replaces its last wait)."""
    until = utcnow() + timedelta(seconds=ttl_s)
    row = s.get(LabWaitRow, campaign_id)
    if row is None:
        s.add(
            LabWaitRow(
                campaign_id=campaign_id,
                lab_id=lab_id,
                holder=holder,
                pools=list(pools),
                since=since,
                expires_at=until,
            )
        )
        return
    row.lab_id, row.holder, row.pools, row.since, row.expires_at = (
        lab_id,
        holder,
        list(pools),
        since,
        until,
    )


def clear_wait(s: Session, campaign_id: int) -> None:
    """The campaign waits for no lab unit now."""
    s.execute(delete(LabWaitRow).where(LabWaitRow.campaign_id == campaign_id))
