"""The resource manager: atomic grants, oldest first, no starvation, no deadlock."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.resources import Grant, KindState, Request, ResourceManager
from models.errors import CampaignStateError
from models.resources import ResourceSpec


def manager(container: int | None = 2, arm: int = 1) -> ResourceManager:
    resources = [ResourceSpec(name="robot-arm", capacity=arm)]
    if container is not None:
        resources.append(ResourceSpec(name="crucible", capacity=container))
    return ResourceManager(resources, "crucible" if container is not None else None)


def test_grant_is_all_or_nothing_and_release_frees_the_units() -> None:
    m = manager(container=1)
    grant = m.grant(Request(1, "dosing", ("robot-arm",)))
    assert grant == Grant(
        Request(1, "dosing", ("robot-arm",)), {"robot-arm": "robot-arm-1"}, "crucible-1"
    )
    assert m.held() == {"robot-arm-1": 1, "crucible-1": 1}
    # Experiment 2 needs the arm and a crucible: neither is free, nothing is taken.
    with pytest.raises(CampaignStateError, match="robot-arm"):
        m.grant(Request(2, "dosing", ("robot-arm",)))
    assert m.held() == {"robot-arm-1": 1, "crucible-1": 1}
    assert m.release_step(1) == ["robot-arm-1"]
    assert m.container_of(1) == "crucible-1"  # held until the experiment ends
    with pytest.raises(CampaignStateError, match="crucible"):
        m.grant(Request(2, "dosing", ("robot-arm",)))
    assert m.held() == {"crucible-1": 1}
    assert m.release_container(1) == "crucible-1"
    assert m.grant(Request(2, "dosing", ("robot-arm",))).container == "crucible-1"


def test_named_units_are_granted_in_declaration_order() -> None:
    m = ResourceManager([ResourceSpec(name="crucible", units=["A7", "B2"])], "crucible")
    assert m.grant(Request(5, "dosing")).container == "A7"
    assert m.grant(Request(6, "dosing")).container == "B2"
    assert m.free("crucible") == []


def test_oldest_waiting_request_reserves_what_it_needs() -> None:
    m = manager(container=None, arm=1)
    m.grant(Request(3, "xrd", ("robot-arm",)))  # exp 3 loads the diffractometer
    kinds = {"dosing": KindState(1), "furnace": KindState(0, (4, 7)), "xrd": KindState(0, (3,))}
    plan = m.plan(
        [
            Request(9, "dosing"),  # younger, needs only the dosing station
            Request(5, "dosing", ("robot-arm",)),  # older, waits for the arm
            Request(6, "furnace"),
        ],
        kinds,
    )
    # Experiment 5 waits for the arm and holds back the free dosing station for itself:
    # the younger experiment 9 may not take it.
    assert plan.grants == []
    assert plan.waiting == {
        5: "resource robot-arm held by exp 3",
        6: "instrument kind furnace: all 2 busy (exp 4, exp 7)",
        9: "instrument kind dosing: reserved for older exp 5",
    }
    m.release_step(3)
    plan = m.plan([Request(9, "dosing"), Request(5, "dosing", ("robot-arm",))], kinds)
    assert plan.grants == [Request(5, "dosing", ("robot-arm",))]


def test_younger_request_backfills_when_it_takes_nothing_an_older_one_needs() -> None:
    m = manager(container=None, arm=1)
    m.grant(Request(3, "xrd", ("robot-arm",)))
    plan = m.plan(
        [Request(5, "dosing", ("robot-arm",)), Request(9, "furnace")],
        {"dosing": KindState(1), "furnace": KindState(1)},
    )
    assert plan.grants == [Request(9, "furnace")]
    assert set(plan.waiting) == {5}


def test_admitted_experiments_go_before_those_waiting_for_a_container() -> None:
    # Experiment 2 was approved first and holds the only crucible; the older experiment 1
    # waits to be admitted. Both want the robot arm: experiment 2 must get it, or 1 waits
    # for the crucible 2 holds while 2 waits for the arm 1 reserved (a deadlock).
    m = manager(container=1, arm=1)
    m.grant(Request(2, "dosing", ("robot-arm",)))
    m.release_step(2)
    plan = m.plan(
        [Request(1, "dosing", ("robot-arm",)), Request(2, "xrd", ("robot-arm",))],
        {"dosing": KindState(1), "xrd": KindState(1)},
    )
    assert plan.grants == [Request(2, "xrd", ("robot-arm",))]
    assert plan.waiting == {1: "resource robot-arm reserved for older exp 2; crucible: none free"}


def test_unavailable_instruments_are_named() -> None:
    plan = manager(container=None).plan([Request(1, "furnace")], {"furnace": KindState(0, (), 2)})
    assert plan.waiting == {
        1: "instrument kind furnace: none available (2 out of service or silent)"
    }


def test_recovery_adopts_containers_and_running_steps() -> None:
    m = manager(container=2)
    assert m.adopt_container(4, "crucible-2")
    assert not m.adopt_container(5, "crucible-2")  # someone else's
    assert not m.adopt_container(5, "robot-arm-1")  # not a container
    assert m.adopt_step(4, ["robot-arm"]) == ["robot-arm-1"]
    assert m.held() == {"crucible-2": 4, "robot-arm-1": 4}
    assert m.grant(Request(6, "dosing")).container == "crucible-1"


# ---------------------------------------------------------------- random workloads


@dataclass
class Workload:
    """Random lab: instruments per kind, resource capacities, a workflow, arrivals."""

    instruments: dict[str, int]
    capacities: dict[str, int]
    container: int | None
    workflow: list[tuple[str, tuple[str, ...]]]
    arrivals: list[int]  # tick at which each experiment (id = index + 1) is ready
    durations: list[list[int]]  # ticks of each step of each experiment
    seed: int
    log: list[str] = field(default_factory=list)


@st.composite
def workloads(draw: st.DrawFn) -> Workload:
    kinds = [f"k{i}" for i in range(draw(st.integers(1, 3)))]
    instruments = {k: draw(st.integers(1, 2)) for k in kinds}
    pools = [f"r{i}" for i in range(draw(st.integers(0, 3)))]
    capacities = {p: draw(st.integers(1, 2)) for p in pools}
    container = draw(st.none() | st.integers(1, 3))
    steps = draw(st.integers(1, 4))
    workflow = [
        (
            draw(st.sampled_from(kinds)),
            tuple(sorted(draw(st.sets(st.sampled_from(pools), max_size=len(pools)))))
            if pools
            else (),
        )
        for _ in range(steps)
    ]
    n = draw(st.integers(1, 10))
    arrivals = [draw(st.integers(0, 12)) for _ in range(n)]
    durations = [[draw(st.integers(1, 4)) for _ in range(steps)] for _ in range(n)]
    return Workload(
        instruments, capacities, container, workflow, arrivals, durations, draw(st.integers(0, 9))
    )


def simulate(w: Workload) -> dict[int, int]:
    """Run the workload through the manager as the controller does; returns each
    experiment's finishing tick. Asserts capacity and progress at every tick."""
    resources = [ResourceSpec(name=p, capacity=c) for p, c in w.capacities.items()]
    if w.container is not None:
        resources.append(ResourceSpec(name="crucible", capacity=w.container))
    m = ResourceManager(resources, "crucible" if w.container is not None else None)
    rng = random.Random(w.seed)
    step_of: dict[int, int] = {}  # experiment -> index of its next/current step
    running: dict[int, tuple[str, int]] = {}  # experiment -> (kind, tick its step ends)
    waiting: set[int] = set()
    done: dict[int, int] = {}
    n = len(w.arrivals)
    bound = max(w.arrivals) + sum(sum(d) for d in w.durations) + 1
    for tick in range(bound + 1):
        for exp, (_, end) in list(running.items()):
            if end == tick:  # a step ends: its units are free; the next step waits
                del running[exp]
                m.release_step(exp)
                step_of[exp] += 1
                if step_of[exp] == len(w.workflow):
                    m.release_container(exp)
                    done[exp] = tick
                else:
                    waiting.add(exp)
        for i, t in enumerate(w.arrivals):
            if t == tick:
                step_of[i + 1] = 0
                waiting.add(i + 1)
        if len(done) == n:
            return done
        while True:
            busy = Counter(kind for kind, _ in running.values())
            kinds = {k: KindState(c - busy[k]) for k, c in w.instruments.items()}
            requests = [Request(e, *w.workflow[step_of[e]]) for e in waiting]
            rng.shuffle(requests)
            plan = m.plan(requests, kinds)
            assert set(plan.waiting) | {r.experiment_id for r in plan.grants} == waiting
            if not plan.grants:
                break
            # The workers take grants one at a time, each for its own kind, in any order.
            req = rng.choice(plan.grants)
            m.grant(req)
            waiting.discard(req.experiment_id)
            running[req.experiment_id] = (
                req.kind,
                tick + w.durations[req.experiment_id - 1][step_of[req.experiment_id]],
            )
        # Never over capacity: each unit has one holder, each kind its instruments.
        held = m.held()
        for p, c in w.capacities.items():
            assert sum(1 for u in held if u.startswith(f"{p}-")) <= c
        for kind, c in w.instruments.items():
            assert sum(1 for k, _ in running.values() if k == kind) <= c
        assert sum(1 for u in held if u.startswith("crucible-")) <= (w.container or 0)
        # No deadlock: something waits only while something runs.
        assert not waiting or running, f"deadlock at tick {tick}: {plan.waiting}"
    raise AssertionError(f"not every experiment finished within {bound} ticks: {done}")


@settings(max_examples=300, deadline=None)
@given(workloads())
def test_random_workloads_never_deadlock_starve_or_exceed_capacity(w: Workload) -> None:
    done = simulate(w)
    assert sorted(done) == list(range(1, len(w.arrivals) + 1))  # every request granted


def test_simulation_catches_a_scheduler_that_lets_younger_experiments_jump_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without the admitted-first rule the approval-order scenario deadlocks: the check
    # above can fail.
    monkeypatch.setattr(ResourceManager, "priority", lambda self, r: (0, r.experiment_id))
    w = Workload(
        instruments={"dose": 1, "xrd": 1},
        capacities={"arm": 1},
        container=1,
        workflow=[("dose", ("arm",)), ("xrd", ("arm",))],
        arrivals=[1, 0],  # experiment 2 is ready (approved) first
        durations=[[1, 1], [2, 1]],
        seed=0,
    )
    with pytest.raises(AssertionError, match="deadlock"):
        simulate(w)
    monkeypatch.undo()
    assert sorted(simulate(w)) == [1, 2]
