"""Grants of lab units across campaigns (controller/store/lab.py, controller/lab.py and the
lab side of controller/resources.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from controller.alarms import Alarms
from controller.health import HealthMonitor
from controller.lab import LabGrants
from controller.resources import KindState, Request, ResourceManager
from controller.store import create_campaign, transaction
from controller.store.lab import (
    GrantConflictError,
    apply_lab,
    release_holder,
    release_units,
    renew_holder,
    set_instrument_state,
    set_priority,
    snapshot,
    take_units,
)
from controller.work import InstrumentSlot
from instruments.client import InstrumentClient
from models.campaign import AlarmSpec, CampaignSpec, ReliabilitySpec
from models.lab import LabSpec, resolve_campaign_data
from models.status import LabInstrumentState
from models.tables import LabUnitRow, LabWaitRow, utcnow

LAB = LabSpec.model_validate(
    {
        "lab": {"name": "lab-1"},
        "instruments": [
            {"name": f"station-{i}", "kind": "station", "address": f"tcp://127.0.0.1:58{i}0"}
            for i in (1, 2, 3)
        ],
        "resources": [{"name": "arm", "capacity": 1}],
    }
)


def campaign_spec(name: str) -> CampaignSpec:
    data: dict[str, Any] = {
        "campaign": {"name": name},
        "lab": {"name": "lab-1", "kinds": ["station"], "resources": ["arm"]},
        "parameters": [{"type": "continuous", "name": "x", "lower": 0.0, "upper": 1.0}],
        "objectives": [{"name": "y", "direction": "maximize"}],
        "workflow": [{"kind": "station", "action": "measure", "needs": ["arm"]}],
        "planner": {"name": "random"},
        "budget": {"max_experiments": 5},
    }
    return CampaignSpec.model_validate(resolve_campaign_data(data, LAB))


@pytest.fixture
def lab(factory: sessionmaker[Session]) -> dict[str, int]:
    """The lab and two campaigns A and B in the store: their ids, and the lab's."""
    with transaction(factory) as s:
        row, _ = apply_lab(s, LAB)
        a = create_campaign(s, campaign_spec("A"), seed=0, max_experiments=5)
        b = create_campaign(s, campaign_spec("B"), seed=0, max_experiments=5)
        return {"lab": row.id, "A": a.id, "B": b.id}


def take(
    factory: sessionmaker[Session], ids: dict[str, int], who: str, units: list[str], exp: int
) -> None:
    with transaction(factory) as s:
        take_units(
            s,
            ids["lab"],
            units,
            campaign_id=ids[who],
            holder=f"ctl-{who}",
            experiment_id=exp,
            ttl_s=60,
        )


def holders(factory: sessionmaker[Session], lab_id: int) -> dict[str, str | None]:
    with transaction(factory) as s:
        rows = s.scalars(select(LabUnitRow).where(LabUnitRow.lab_id == lab_id))
        return {r.unit: r.holder for r in rows}


def test_a_grant_held_by_an_expired_lease_is_taken_over_and_a_live_one_is_not(
    factory: sessionmaker[Session], lab: dict[str, int]
) -> None:
    take(factory, lab, "A", ["station-1"], exp=1)
    with pytest.raises(GrantConflictError) as err:
        take(factory, lab, "B", ["station-1"], exp=2)
    assert err.value.unit == "station-1"
    assert err.value.campaign == "A"
    assert "station-1: held by campaign A" in str(err.value)
    assert holders(factory, lab["lab"])["station-1"] == "ctl-A"
    with transaction(factory) as s:  # A's controller stopped renewing: its grant expires
        s.execute(
            update(LabUnitRow)
            .where(LabUnitRow.unit == "station-1")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        assert "station-1" not in snapshot(s, lab["lab"]).held
    take(factory, lab, "B", ["station-1"], exp=2)
    assert holders(factory, lab["lab"])["station-1"] == "ctl-B"
    with transaction(factory) as s:  # the fenced holder's renewal no longer reaches it
        assert renew_holder(s, "ctl-A", 60) == 0
        assert renew_holder(s, "ctl-B", 60) == 1


def test_a_step_gets_all_its_lab_units_or_none_across_two_campaigns(
    factory: sessionmaker[Session], lab: dict[str, int]
) -> None:
    take(factory, lab, "A", ["station-1", "arm-1"], exp=1)
    with pytest.raises(GrantConflictError) as err:
        take(factory, lab, "B", ["station-2", "arm-1"], exp=2)
    assert err.value.unit == "arm-1"
    held = holders(factory, lab["lab"])
    assert held["station-2"] is None, "B must not keep station-2 while it lacks the arm"
    assert held["station-1"] == held["arm-1"] == "ctl-A"
    with transaction(factory) as s:
        assert release_holder(s, "ctl-A") == 2
    take(factory, lab, "B", ["station-2", "arm-1"], exp=2)
    assert holders(factory, lab["lab"])["arm-1"] == "ctl-B"


def manager(factory: sessionmaker[Session], ids: dict[str, int], who: str) -> ResourceManager:
    spec = campaign_spec(who)
    grants = LabGrants(factory, spec, ids[who], f"ctl-{who}", ttl_s=60)
    return ResourceManager(spec.resources, None, grants)


def plan(m: ResourceManager, requests: list[Request]) -> Any:
    assert m.lab is not None
    m.lab.refresh(force=True)
    return m.plan(requests, {"station": KindState(idle=3)})


def test_two_campaigns_share_the_arm_in_turn_and_the_waiting_one_says_who_holds_it(
    factory: sessionmaker[Session], lab: dict[str, int]
) -> None:
    a, b = manager(factory, lab, "A"), manager(factory, lab, "B")
    ra1 = Request(1, "station", ("arm",))
    assert plan(a, [ra1]).grants == [ra1]
    a.grant(ra1, instrument="station-1")
    rb = Request(2, "station", ("arm",))
    waiting = plan(b, [rb])
    assert waiting.grants == []
    assert waiting.waiting[2] == "resource arm held by arm-1, held by campaign A"
    with transaction(factory) as s:
        assert [w.campaign for w in snapshot(s, lab["lab"]).waits] == ["B"]
    # A's step ends; its next experiment arrives after B began to wait: B goes first
    a.release_step(1)
    ra2 = Request(3, "station", ("arm",))
    later = plan(a, [ra2])
    assert later.grants == []
    assert "reserved for campaign B" in later.waiting[3]
    assert plan(b, [rb]).grants == [rb]
    b.grant(rb, instrument="station-2")
    held = holders(factory, lab["lab"])
    assert held["arm-1"] == held["station-2"] == "ctl-B"
    with transaction(factory) as s:  # B waits for nothing now; A does
        assert [w.campaign for w in snapshot(s, lab["lab"]).waits] == ["A"]


def test_a_waiting_campaign_sees_another_take_or_free_a_unit_and_not_a_renewal(
    factory: sessionmaker[Session], lab: dict[str, int]
) -> None:
    b = LabGrants(factory, campaign_spec("B"), lab["B"], "ctl-B", ttl_s=60)
    assert not b.grants_changed()  # nothing held: nothing changed
    take(factory, lab, "A", ["station-1", "arm-1"], exp=1)
    b.refresh(force=True)
    assert b.grants_changed()
    assert not b.grants_changed()
    with transaction(factory) as s:  # A renews its grants: no need to plan again
        assert renew_holder(s, "ctl-A", 120) == 2
    assert not b.grants_changed()
    assert not b.unit_free("arm-1")
    with transaction(factory) as s:
        release_units(s, lab["lab"], ["arm-1"], "ctl-A")
    assert b.grants_changed()
    b.refresh()  # the change made the next refresh read the lab again
    assert b.unit_free("arm-1")
    assert not b.unit_free("station-1")


def test_an_operator_priority_puts_a_campaign_ahead_of_one_waiting_longer(
    factory: sessionmaker[Session], lab: dict[str, int]
) -> None:
    a, b = manager(factory, lab, "A"), manager(factory, lab, "B")
    take(factory, lab, "A", ["arm-1"], exp=99)  # an earlier step of A holds the arm
    rb, ra = Request(2, "station", ("arm",)), Request(3, "station", ("arm",))
    assert plan(b, [rb]).grants == []  # B waits first ...
    assert plan(a, [ra]).grants == []  # ... then A
    with transaction(factory) as s:
        release_units(s, lab["lab"], ["arm-1"], "ctl-A")
    assert "reserved for campaign B (priority 0" in plan(a, [ra]).waiting[3]
    with transaction(factory) as s:
        set_priority(s, "A", 5)
    assert "reserved for campaign A (priority 5" in plan(b, [rb]).waiting[2]
    assert plan(a, [ra]).grants == [ra]


def test_a_live_grant_is_not_taken_even_when_the_plan_was_stale(
    factory: sessionmaker[Session], lab: dict[str, int]
) -> None:
    a, b = manager(factory, lab, "A"), manager(factory, lab, "B")
    rb = Request(2, "station", ("arm",))
    assert plan(b, [rb]).grants == [rb]  # B saw the arm free ...
    take(factory, lab, "A", ["arm-1"], exp=1)  # ... and A took it in the meantime
    with pytest.raises(GrantConflictError):
        b.grant(rb, instrument="station-2")
    assert b.held() == {}
    assert holders(factory, lab["lab"])["station-2"] is None
    with transaction(factory) as s:
        assert s.get(LabWaitRow, lab["B"]) is None
    assert a.held() == {}


def test_a_lab_instrument_out_of_service_or_quarantined_is_down_for_every_campaign(
    factory: sessionmaker[Session], lab: dict[str, int]
) -> None:
    a, b = manager(factory, lab, "A"), manager(factory, lab, "B")
    assert a.lab is not None
    assert b.lab is not None
    with transaction(factory) as s:
        set_instrument_state(
            s, lab["lab"], "station-1", LabInstrumentState.OUT_OF_SERVICE, reason="cleaning"
        )
        a.lab.record_state(s, "station-2", LabInstrumentState.QUARANTINED, "3 faults", 60.0)
    b.lab.refresh(force=True)
    assert b.lab.free_units("kind:station") == ["station-3"]
    assert b.lab.elsewhere("kind:station") == [
        "station-1, out of service (cleaning)",
        "station-2, quarantined (3 faults)",
    ]
    with transaction(factory) as s:  # a quarantine ends by itself
        a.lab.record_state(s, "station-2", LabInstrumentState.QUARANTINED, "3 faults", 0.0)
    b.lab.refresh(force=True)
    assert b.lab.free_units("kind:station") == ["station-2", "station-3"]


def test_a_step_waiting_for_lab_stations_says_which_campaign_holds_each(
    factory: sessionmaker[Session], lab: dict[str, int]
) -> None:
    a = manager(factory, lab, "A")
    assert a.lab is not None
    take(factory, lab, "B", ["station-1"], exp=7)
    take(factory, lab, "B", ["station-2"], exp=8)
    with transaction(factory) as s:
        set_instrument_state(
            s, lab["lab"], "station-3", LabInstrumentState.OUT_OF_SERVICE, reason="cleaning"
        )
    a.lab.refresh(force=True)
    kinds = {"station": KindState(idle=0, elsewhere=tuple(a.lab.elsewhere("kind:station")))}
    waiting = a.plan([Request(1, "station", ("arm",))], kinds).waiting[1]
    assert waiting == (
        "instrument kind station: station-1, held by campaign B; station-2, held by campaign "
        "B; station-3, out of service (cleaning)"
    )


def test_a_restarted_controller_keeps_the_grants_of_steps_still_running_and_frees_the_rest(
    factory: sessionmaker[Session], lab: dict[str, int]
) -> None:
    take(factory, lab, "A", ["station-1", "arm-1"], exp=1)  # still running on station-1
    take(factory, lab, "A", ["station-2"], exp=2)  # its step ended while A was down
    take(factory, lab, "B", ["station-3"], exp=3)
    spec = campaign_spec("A")
    grants = LabGrants(factory, spec, lab["A"], "ctl-A2", ttl_s=60)  # the new controller
    m = ResourceManager(spec.resources, None, grants)
    m.adopt_step(1, ["arm"])
    dropped = m.adopt_lab(grants.adopt(), resumed=[1])
    assert dropped == ["station-2"]
    assert holders(factory, lab["lab"]) == {
        "station-1": "ctl-A2",
        "arm-1": "ctl-A2",
        "station-2": None,
        "station-3": "ctl-B",
    }
    m.release_step(1)
    assert holders(factory, lab["lab"])["arm-1"] is None
    assert holders(factory, lab["lab"])["station-1"] is None


def test_a_campaign_joining_a_lab_starts_with_the_labs_default_priority(
    factory: sessionmaker[Session],
) -> None:
    lab = LAB.model_copy(update={"defaults": LAB.defaults.model_copy(update={"priority": 3})})
    with transaction(factory) as s:
        apply_lab(s, lab)
        assert create_campaign(s, campaign_spec("A"), seed=0, max_experiments=1).priority == 3


def test_a_grant_conflict_keeps_its_data_through_pickling() -> None:
    err = pickle.loads(pickle.dumps(GrantConflictError("arm-1", "B")))
    assert (err.unit, err.campaign, str(err)) == (
        "arm-1",
        "B",
        "lab unit arm-1: held by campaign B",
    )


def test_a_quarantine_by_one_campaigns_health_monitor_is_seen_by_the_other(
    factory: sessionmaker[Session], lab: dict[str, int]
) -> None:
    a, b = manager(factory, lab, "A"), manager(factory, lab, "B")
    assert a.lab is not None
    assert b.lab is not None
    grants_a, grants_b = a.lab, b.lab

    async def scenario() -> None:
        client = InstrumentClient("tcp://127.0.0.1:5810", name="station-1", timeout_s=1.0)
        slot = InstrumentSlot("station-1", "station", "tcp://127.0.0.1:5810", client)

        async def changed() -> None:
            pass

        def spawn(coro: Coroutine[Any, Any, None]) -> None:
            asyncio.get_running_loop().create_task(coro)

        alarms = Alarms(AlarmSpec(), "A", lab["A"], factory, spawn)
        spec = ReliabilitySpec(quarantine_after=2, quarantine_s=60.0)
        monitor = HealthMonitor(
            {"station-1": slot}, spec, lab["A"], factory, alarms, changed, print
        )
        monitor.lab_state = grants_a.record_slot
        for _ in range(2):
            monitor.fault(slot, "sim_fault", "boom")
        grants_b.refresh(force=True)
        assert grants_b.down("station-1") == "quarantined (2 faults in a row, last sim_fault: boom)"
        await monitor.set_service(slot, False, "cleaning")
        grants_b.refresh(force=True)
        assert grants_b.down("station-1") == "out of service (cleaning)"
        await monitor.set_service(slot, True, "")
        grants_b.refresh(force=True)
        assert grants_b.down("station-1") is None
        await client.close()

    asyncio.run(scenario())
