"""Controller leases (controller/store/lease.py): one controller per campaign, on SQLite and
PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from controller.store import transaction
from controller.store.engine import WRITES
from controller.store.lease import (
    LeaseHeldError,
    LeaseHolder,
    acquire_lease,
    holder_process_gone,
    lease_is_live,
    lease_of,
    release_lease,
    renew_lease,
)
from models.tables import ControllerLeaseRow, utcnow


def other_live_holder() -> LeaseHolder:
    """A holder on this host whose process (this test process) is alive: a different id."""
    me = LeaseHolder.this_process()
    return LeaseHolder(me.holder.rsplit("/", 1)[0] + "/otherone", me.host, me.pid)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_lease_refuses_a_second_controller_and_names_the_holder(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    first = other_live_holder()
    with transaction(factory) as s:
        acquire_lease(s, campaign_id, first, ttl_s=60)
    with pytest.raises(LeaseHeldError) as err, transaction(factory) as s:
        acquire_lease(s, campaign_id, LeaseHolder.this_process(), ttl_s=60)
    assert err.value.holder == first.holder
    assert f"process {os.getpid()}" in str(err.value)
    assert socket.gethostname() in str(err.value)
    with transaction(factory) as s:
        row = lease_of(s, campaign_id)
        assert row is not None
        assert row.holder == first.holder
        assert lease_is_live(row)


def test_taking_a_lease_one_holds_renews_it(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    me = LeaseHolder.this_process()
    with transaction(factory) as s:
        first = acquire_lease(s, campaign_id, me, ttl_s=5).expires_at
    with transaction(factory) as s:
        again = acquire_lease(s, campaign_id, me, ttl_s=60)
        assert again.expires_at > first + timedelta(seconds=30)


def test_an_expired_lease_is_taken_over_and_its_old_holder_is_fenced(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    old = other_live_holder()
    new = LeaseHolder.this_process()
    with transaction(factory) as s:
        acquire_lease(s, campaign_id, old, ttl_s=60)
        s.execute(update(ControllerLeaseRow).values(expires_at=utcnow() - timedelta(seconds=1)))
    with transaction(factory) as s:
        assert not lease_is_live(lease_of(s, campaign_id))
        acquire_lease(s, campaign_id, new, ttl_s=60)
    with transaction(factory) as s:
        assert not renew_lease(s, campaign_id, old, ttl_s=60)  # fenced
        assert renew_lease(s, campaign_id, new, ttl_s=60)
        assert not release_lease(s, campaign_id, old)
        row = lease_of(s, campaign_id)
        assert row is not None
        assert row.holder == new.holder


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_before_it_expires(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    host, pid = socket.gethostname(), dead_pid()
    gone = LeaseHolder(f"{host}/{pid}/12345/deadbeef", host, pid)
    with transaction(factory) as s:
        acquire_lease(s, campaign_id, gone, ttl_s=3600)
    with transaction(factory) as s:
        row = lease_of(s, campaign_id)
        assert row is not None
        assert holder_process_gone(row)
        assert not lease_is_live(row)
        acquire_lease(s, campaign_id, LeaseHolder.this_process(), ttl_s=60)


def test_a_recycled_pid_does_not_keep_a_lease_alive() -> None:
    host = socket.gethostname()
    pid = os.getpid()  # alive, but started at another time than the holder claims
    row = ControllerLeaseRow(
        campaign_id=1, holder=f"{host}/{pid}/1/abcd", host=host, pid=pid, expires_at=utcnow()
    )
    assert holder_process_gone(row)
    row.holder = LeaseHolder.this_process().holder
    assert not holder_process_gone(row)
    remote = ControllerLeaseRow(
        campaign_id=1, holder="elsewhere/1/1/abcd", host="elsewhere", pid=1, expires_at=utcnow()
    )
    assert not holder_process_gone(remote)  # another host's processes are not judged here


def test_of_two_controllers_racing_for_an_expired_lease_only_one_wins(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    old = other_live_holder()
    with transaction(factory) as s:
        acquire_lease(s, campaign_id, old, ttl_s=60)
        s.execute(update(ControllerLeaseRow).values(expires_at=utcnow() - timedelta(seconds=1)))
    a, b = LeaseHolder.this_process(), LeaseHolder.this_process()
    slow = factory()
    # A starts as a reader (PostgreSQL's transactions do; on SQLite a transaction that may
    # write takes the write lock up front, which would make B wait instead of racing)
    slow.connection(execution_options={WRITES: False})
    try:
        stale = lease_of(slow, campaign_id)  # A reads the expired lease ...
        assert stale is not None
        assert not lease_is_live(stale)
        with transaction(factory) as s:  # ... B takes it over meanwhile ...
            acquire_lease(s, campaign_id, b, ttl_s=60)
        # ... and A's compare-and-set finds it changed (SQLite refuses A's write outright:
        # its read snapshot is older than B's commit)
        with pytest.raises((LeaseHeldError, OperationalError)):
            acquire_lease(slow, campaign_id, a, ttl_s=60)
        slow.rollback()
    finally:
        slow.close()
    with transaction(factory) as s:
        row = lease_of(s, campaign_id)
        assert row is not None
        assert row.holder == b.holder


def test_release_frees_the_campaign(factory: sessionmaker[Session], campaign_id: int) -> None:
    me = LeaseHolder.this_process()
    with transaction(factory) as s:
        acquire_lease(s, campaign_id, me, ttl_s=60)
    with transaction(factory) as s:
        assert release_lease(s, campaign_id, me)
    with transaction(factory) as s:
        assert lease_of(s, campaign_id) is None
        acquire_lease(s, campaign_id, other_live_holder(), ttl_s=60)
