"""Controller leases: at most one controller drives a campaign at any time.

Two controllers on one campaign would each send experiments to the same instruments: an
operator starting a campaign from the dashboard while ``sdlab run`` still drives it, or a
second terminal. A controller therefore takes the campaign's lease (one
:class:`~models.tables.ControllerLeaseRow` per campaign) before it sends anything, renews it
every few seconds, and gives it back when it stops. Another controller is refused while the
lease is live, and takes it over when

* the lease has expired (its holder stopped renewing: crashed, hung or cut off), or
* its holder ran on this host and that process is gone (a crash followed by an immediate
  restart need not wait for the expiry).

Every change is a compare-and-set (an ``UPDATE`` whose ``WHERE`` names the holder and the
expiry read), so two controllers racing for one expired lease cannot both win, on SQLite or
PostgreSQL. A controller whose renewal finds another holder has been *fenced*: it must stop
sending at once (Kleppmann, *Designing Data-Intensive Applications*, ch. 8, "The leader and
the lock"). Expiry times compare clocks of different hosts: keep them synchronised (NTP).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.errors import CampaignStateError
from models.tables import ControllerLeaseRow, utcnow

logger = logging.getLogger(__name__)

__all__ = [
    "LeaseHeldError",
    "LeaseHolder",
    "acquire_lease",
    "lease_is_live",
    "lease_of",
    "release_lease",
    "renew_lease",
]


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (state first), or ``None`` without such a process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ")"
    return stat.rsplit(")", 1)[-1].split()


def _start_ticks(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or ``None``."""
    fields = _proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds (or wants) a lease: a unique id plus where the process runs.

    Attributes:
        holder: Unique id of the controller: ``host/pid/start ticks/random``.
        host: Host name of the controller's process.
        pid: Process id of the controller's process.
    """

    holder: str
    host: str
    pid: int

    @classmethod
    def this_process(cls) -> LeaseHolder:
        """A new holder id for the calling process."""
        host = socket.gethostname()
        pid = os.getpid()
        ticks = _start_ticks(pid) or "0"
        return cls(f"{host}/{pid}/{ticks}/{uuid.uuid4().hex[:8]}", host, pid)


def holder_process_gone(row: ControllerLeaseRow) -> bool:
    """Whether the lease's holder ran on this host and its process no longer exists.

    The process must be the same one: a recycled pid (another start time) or a zombie left
    by a killed process counts as gone. Leases of other hosts are never judged here.
    """
    if row.host != socket.gethostname():
        return False
    parts = row.holder.split("/")
    ticks = parts[2] if len(parts) >= 4 else None
    fields = _proc_stat(row.pid)
    state = fields[0] if fields else None
    if state is None:
        if Path("/proc/self/stat").exists():
            return True
        try:  # no /proc: ask the kernel whether the pid exists at all
            os.kill(row.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    if state == "Z":
        return True
    return ticks not in (None, "0") and _start_ticks(row.pid) != ticks


class LeaseHeldError(CampaignStateError):
    """Another live controller holds the campaign's lease.

    Attributes:
        campaign_id: The campaign.
        holder: The holder's id.
        host: Where the holder runs.
        pid: The holder's process id.
        expires_at: When its lease expires unless renewed.
    """

    def __init__(self, campaign_id: int, row: ControllerLeaseRow) -> None:
        self.campaign_id = campaign_id
        self.holder = row.holder
        self.host = row.host
        self.pid = row.pid
        self.expires_at = row.expires_at
        super().__init__(
            f"campaign {campaign_id} is being run by another controller (host {row.host}, "
            f"process {row.pid}; its lease runs until {row.expires_at:%Y-%m-%d %H:%M:%S} UTC "
            "unless renewed): stop that one first, or wait for its lease to expire"
        )


def lease_of(s: Session, campaign_id: int) -> ControllerLeaseRow | None:
    """The campaign's lease row, live or not, or ``None``."""
    return s.get(ControllerLeaseRow, campaign_id)


def lease_is_live(row: ControllerLeaseRow | None, now: datetime | None = None) -> bool:
    """Whether ``row`` still protects its campaign (not expired, holder not known dead)."""
    if row is None:
        return False
    now = now or utcnow()
    return row.expires_at > now and not holder_process_gone(row)


def acquire_lease(
    s: Session, campaign_id: int, me: LeaseHolder, ttl_s: float
) -> ControllerLeaseRow:
    """Take the campaign's lease for ``ttl_s`` seconds, or raise if someone else holds it.

    Taking a lease ``me`` already holds renews it.

    Args:
        s: Open session; the caller commits (the lease is only taken once committed).
        campaign_id: The campaign.
        me: The controller taking it.
        ttl_s: Seconds until the lease expires unless renewed.

    Returns:
        The lease row, now held by ``me``.

    Raises:
        LeaseHeldError: If another controller's lease is live, or another controller took
            the lease between our read and our write.
    """
    now = utcnow()
    expires = now + timedelta(seconds=ttl_s)
    row = lease_of(s, campaign_id)
    if row is None:
        fresh = ControllerLeaseRow(
            campaign_id=campaign_id,
            holder=me.holder,
            host=me.host,
            pid=me.pid,
            acquired_at=now,
            renewed_at=now,
            expires_at=expires,
        )
        try:
            with s.begin_nested():
                s.add(fresh)
        except IntegrityError:
            row = lease_of(s, campaign_id)
            if row is None:  # pragma: no cover - inserted and deleted in between
                raise
            raise LeaseHeldError(campaign_id, row) from None
        return fresh
    if row.holder != me.holder and lease_is_live(row, now):
        raise LeaseHeldError(campaign_id, row)
    previous = (row.holder, row.expires_at)
    done = s.execute(
        update(ControllerLeaseRow)
        .where(
            ControllerLeaseRow.campaign_id == campaign_id,
            ControllerLeaseRow.holder == previous[0],
            ControllerLeaseRow.expires_at == previous[1],
        )
        .values(
            holder=me.holder,
            host=me.host,
            pid=me.pid,
            acquired_at=now if previous[0] != me.holder else row.acquired_at,
            renewed_at=now,
            expires_at=expires,
        )
        .execution_options(synchronize_session=False)
    )
    s.expire(row)
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseHeldError(campaign_id, lease_of(s, campaign_id) or row)
    if previous[0] != me.holder:
        logger.warning(
            "campaign %d: took over the lease of %s (expired %s or its process is gone)",
            campaign_id,
            previous[0],
            f"{previous[1]:%H:%M:%S}",
        )
    return row


def renew_lease(s: Session, campaign_id: int, me: LeaseHolder, ttl_s: float) -> bool:
    """Extend ``me``'s lease by ``ttl_s`` seconds from now.

    Returns:
        ``False`` when ``me`` no longer holds the lease (another controller took it over):
        the caller has been fenced and must stop sending at once.
    """
    now = utcnow()
    done = s.execute(
        update(ControllerLeaseRow)
        .where(
            ControllerLeaseRow.campaign_id == campaign_id,
            ControllerLeaseRow.holder == me.holder,
        )
        .values(renewed_at=now, expires_at=now + timedelta(seconds=ttl_s))
        .execution_options(synchronize_session=False)
    )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


def release_lease(s: Session, campaign_id: int, me: LeaseHolder) -> bool:
    """Give the lease back; returns whether ``me`` held it."""
    done = s.execute(
        delete(ControllerLeaseRow)
        .where(
            ControllerLeaseRow.campaign_id == campaign_id,
            ControllerLeaseRow.holder == me.holder,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


def live_leases(s: Session) -> dict[int, ControllerLeaseRow]:
    """Every live lease, by campaign id (for the dashboard)."""
    rows = s.scalars(select(ControllerLeaseRow)).all()
    now = utcnow()
    return {r.campaign_id: r for r in rows if lease_is_live(r, now)}
