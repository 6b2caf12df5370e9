"""Lab units passed from a step that ended to the campaign's next step, and the PostgreSQL
notification that wakes the other campaigns' controllers (controller/lab.py,
controller/store/lab_notify.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from controller.lab import LabGrants
from controller.resources import KindState, Request, ResourceManager
from controller.store import transaction
from controller.store.lab import GrantConflictError, release_units, take_units
from controller.store.lab_notify import LabListener
from models.tables import LabUnitRow
from tests.controller.test_lab_grants import campaign_spec, holders, lab, take

__all__ = ["lab"]  # the fixture, shared with test_lab_grants


def manager(factory: sessionmaker[Session], ids: dict[str, int], who: str) -> ResourceManager:
    spec = campaign_spec(who)
    return ResourceManager(
        spec.resources, None, LabGrants(factory, spec, ids[who], f"ctl-{who}", 60)
    )


def plan(m: ResourceManager, requests: list[Request]) -> Any:
    assert m.lab is not None
    m.lab.refresh()
    return m.plan(requests, {"station": KindState(idle=3)})


def experiment_of(factory: sessionmaker[Session], unit: str) -> int | None:
    with transaction(factory) as s:
        return s.scalar(select(LabUnitRow.experiment_id).where(LabUnitRow.unit == unit))


def test_a_step_inherits_the_units_of_the_step_that_ended_in_its_own_write(
    factory: sessionmaker[Session], lab: dict[str, int]
) -> None:
    a = manager(factory, lab, "A")
    assert a.lab is not None
    r1 = Request(1, "station", ("arm",))
    assert plan(a, [r1]).grants == [r1]
    a.grant(r1, instrument="station-1")
    assert experiment_of(factory, "arm-1") == 1
    a.release_step(1, hand_over=True)  # the step ended: its units are returning
    # nobody else sees them free, and this campaign's next step may have them
    assert holders(factory, lab["lab"])["arm-1"] == "ctl-A"
    r2 = Request(2, "station", ("arm",))
    assert plan(a, [r2]).grants == [r2]
    a.grant(r2, instrument="station-1", staged=True)
    a.lab.settle()  # nothing left over to release
    held = holders(factory, lab["lab"])
    assert held["arm-1"] == held["station-1"] == "ctl-A"
    assert experiment_of(factory, "arm-1") == 1, "passed over only when the step is written"
    write = a.lab.staged_write(2)
    assert write is not None
    with transaction(factory) as s:
        write(s)
    a.lab.committed(2)
    assert experiment_of(factory, "arm-1") == experiment_of(factory, "station-1") == 2
    assert a.lab.staged_write(2) is None


def test_a_step_that_inherits_some_units_takes_the_rest_at_once_or_nothing(
    factory: sessionmaker[Session], lab: dict[str, int]
) -> None:
    a, b = manager(factory, lab, "A"), manager(factory, lab, "B")
    assert a.lab is not None
    r1 = Request(1, "station", ())
    assert plan(a, [r1]).grants == [r1]
    a.grant(r1, instrument="station-1")
    a.release_step(1, hand_over=True)
    r2 = Request(2, "station", ("arm",))
    assert plan(a, [r2]).grants == [r2]  # A saw the arm free ...
    take(factory, lab, "B", ["arm-1"], exp=7)  # ... and B took it in the meantime
    with pytest.raises(GrantConflictError):
        a.grant(r2, instrument="station-1", staged=True)
    assert a.held() == {}
    assert a.lab.staged_write(2) is None
    # station-1 never left A's hands half-granted: it is still returning, and goes back
    assert holders(factory, lab["lab"])["station-1"] == "ctl-A"
    assert a.lab.settle() == ["station-1"]
    assert holders(factory, lab["lab"])["station-1"] is None
    assert b.held() == {}


def test_a_unit_returning_goes_to_the_campaign_waiting_ahead_not_to_the_next_step(
    factory: sessionmaker[Session], lab: dict[str, int]
) -> None:
    a, b = manager(factory, lab, "A"), manager(factory, lab, "B")
    assert a.lab is not None
    assert b.lab is not None
    r1 = Request(1, "station", ("arm",))
    assert plan(a, [r1]).grants == [r1]
    a.grant(r1, instrument="station-1")
    rb = Request(5, "station", ("arm",))
    assert plan(b, [rb]).grants == []  # B waits for the arm from now on
    a.release_step(1, hand_over=True)
    r2 = Request(2, "station", ("arm",))
    later = plan(a, [r2])
    assert later.grants == []
    assert "reserved for campaign B" in later.waiting[2]
    assert a.lab.settle() == ["arm-1", "station-1"]
    assert holders(factory, lab["lab"])["arm-1"] is None
    b.lab.stale()
    assert plan(b, [rb]).grants == [rb]
    b.grant(rb, instrument="station-2", staged=True)
    assert holders(factory, lab["lab"])["arm-1"] == "ctl-B"


def test_an_inherited_unit_lost_with_an_expired_grant_writes_nothing(
    factory: sessionmaker[Session], lab: dict[str, int]
) -> None:
    a = manager(factory, lab, "A")
    assert a.lab is not None
    r1 = Request(1, "station", ("arm",))
    plan(a, [r1])
    a.grant(r1, instrument="station-1")
    a.release_step(1, hand_over=True)
    r2 = Request(2, "station", ("arm",))
    assert plan(a, [r2]).grants == [r2]
    a.grant(r2, instrument="station-1", staged=True)
    write = a.lab.staged_write(2)
    assert write is not None
    with transaction(factory) as s:  # A's grants lapsed and B took the arm meanwhile
        release_units(s, lab["lab"], ["arm-1"], "ctl-A")
        take_units(s, lab["lab"], ["arm-1"], campaign_id=lab["B"], holder="ctl-B",
                   experiment_id=9, ttl_s=60)  # fmt: skip
    with pytest.raises(GrantConflictError), transaction(factory) as s:
        write(s)
    held = holders(factory, lab["lab"])
    assert held["arm-1"] == "ctl-B"
    assert held["station-1"] == "ctl-A"
    assert experiment_of(factory, "station-1") == 1
    a.release_step(2, hand_over=True)
    a.lab.settle()
    assert holders(factory, lab["lab"]) == {"station-1": None, "station-2": None,
                                             "station-3": None, "arm-1": "ctl-B"}  # fmt: skip


async def _woken(listener: LabListener, timeout_s: float) -> bool:
    try:
        await asyncio.wait_for(listener.woken.wait(), timeout_s)
    except TimeoutError:
        return False
    listener.woken.clear()
    return True


@pytest.mark.postgres
def test_a_released_unit_wakes_the_listening_controllers_and_a_hand_over_does_not(
    db_url: str, engine: Engine, factory: sessionmaker[Session], lab: dict[str, int]
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("notifications are PostgreSQL's; SQLite is polled")
    a = manager(factory, lab, "A")
    assert a.lab is not None
    b = LabGrants(factory, campaign_spec("B"), lab["B"], "ctl-B", 60)
    other = LabGrants(factory, campaign_spec("A"), lab["A"], "ctl-A", 60)
    listener = b.listener()
    assert listener is not None
    assert listener.channel != ""
    same = other.listener()
    assert same is not None
    assert same.channel == listener.channel

    async def scenario() -> list[bool]:
        task = asyncio.create_task(listener.run())
        try:
            for _ in range(200):
                if listener.listening:
                    break
                await asyncio.sleep(0.05)
            assert listener.listening
            await _woken(listener, 5.0)  # the wake-up every new connection starts with
            seen = []
            r1 = Request(1, "station", ("arm",))
            plan(a, [r1])
            a.grant(r1, instrument="station-1")  # a take frees nothing: no one is woken
            seen.append(await _woken(listener, 0.5))
            a.release_step(1, hand_over=True)
            r2 = Request(2, "station", ("arm",))
            plan(a, [r2])
            a.grant(r2, instrument="station-1", staged=True)
            assert a.lab is not None
            write = a.lab.staged_write(2)
            assert write is not None
            with transaction(factory) as s:  # a hand-over frees nothing either
                write(s)
            seen.append(await _woken(listener, 0.5))
            a.release_step(2)  # given back: B's controller is woken
            seen.append(await _woken(listener, 10.0))
            return seen
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    assert asyncio.run(scenario()) == [False, False, True]
