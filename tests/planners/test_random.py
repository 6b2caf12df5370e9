"""Tests of the random and Sobol planners (planners/random.py)."""

from __future__ import annotations

import pytest
import torch

from models.objectives import Objective
from models.params import SearchSpace
from models.records import Observation
from planners.base import make_planner
from planners.random import RandomPlanner, SobolPlanner, sobol_unit


def _observe(point: dict[str, object], y: float = 0.0) -> Observation:
    return Observation(parameters=point, objectives={"y": y})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["random", "sobol"])
def test_proposals_valid_and_deterministic(
    name: str, mixed_space: SearchSpace, minimize_y: list[Objective]
) -> None:
    a = make_planner(name, mixed_space, minimize_y, seed=11)
    b = make_planner(name, mixed_space, minimize_y, seed=11)
    c = make_planner(name, mixed_space, minimize_y, seed=12)
    da, db, dc = a.ask(16), b.ask(16), c.ask(16)
    pa = [dict(p.parameters) for p in da.proposals]
    assert pa == [dict(p.parameters) for p in db.proposals]
    assert pa != [dict(p.parameters) for p in dc.proposals]
    assert len(pa) == 16
    for point in pa:
        assert mixed_space.validate_point(point) == point
    assert len({tuple(sorted(map(str, p.items()))) for p in pa}) == 16
    assert da.planner == name
    assert da.seed == 11
    assert da.n_train == 0
    assert da.n_pending == 0
    assert all(p.origin == name for p in da.proposals)


def test_random_same_state_same_decision(
    branin_space: SearchSpace, minimize_y: list[Objective]
) -> None:
    a = RandomPlanner(branin_space, minimize_y, seed=5)
    first = a.ask(3).proposals
    a.tell([_observe(dict(first[0].parameters))])
    after_tell = a.ask(2, pending=[first[1].parameters])
    b = RandomPlanner(branin_space, minimize_y, seed=5)
    b.tell([_observe(dict(first[0].parameters))])
    replay = b.ask(2, pending=[first[1].parameters])
    assert [p.parameters for p in replay.proposals] == [p.parameters for p in after_tell.proposals]
    assert replay.n_train == 1
    assert replay.n_pending == 1
    # asking again in the same state does not repeat the same points
    again = b.ask(2, pending=[first[1].parameters])
    assert again.details["repeat"] == 1
    assert [p.parameters for p in again.proposals] != [p.parameters for p in replay.proposals]


def test_random_is_roughly_uniform(mixed_space: SearchSpace, minimize_y: list[Objective]) -> None:
    points = RandomPlanner(mixed_space, minimize_y, seed=0).ask(3000).proposals
    temps = torch.tensor([p.parameters["temperature_c"] for p in points])
    assert float(temps.mean()) == pytest.approx(210.0, abs=10.0)
    solvents = [p.parameters["solvent"] for p in points]
    for s in ("water", "ethanol", "dmso"):
        assert solvents.count(s) == pytest.approx(1000, abs=100)


def test_sobol_continues_sequence_across_asks_and_restarts(
    branin_space: SearchSpace, minimize_y: list[Objective]
) -> None:
    whole = SobolPlanner(branin_space, minimize_y, seed=3).ask(8).proposals
    expected = [dict(p.parameters) for p in whole]

    planner = SobolPlanner(branin_space, minimize_y, seed=3)
    got = [dict(p.parameters) for p in planner.ask(3).proposals]
    # the first two finished, the third is still running
    planner.tell([_observe(got[0]), _observe(got[1])])
    nxt = planner.ask(2, pending=[got[2]])
    assert nxt.details["sequence_start"] == 3
    got += [dict(p.parameters) for p in nxt.proposals]

    # a planner rebuilt from the store (3 told, 2 pending) continues the same sequence
    rebuilt = SobolPlanner(branin_space, minimize_y, seed=3)
    rebuilt.tell([_observe(p) for p in got[:3]])
    got += [dict(p.parameters) for p in rebuilt.ask(3, pending=got[3:5]).proposals]
    assert got == expected


def test_sobol_counts_failed_experiments(
    branin_space: SearchSpace, minimize_y: list[Objective]
) -> None:
    expected = [dict(p.parameters) for p in SobolPlanner(branin_space, minimize_y).ask(3).proposals]
    planner = SobolPlanner(branin_space, minimize_y)
    planner.tell([Observation(parameters=expected[0], objectives={}, feasible=False)])
    assert [dict(p.parameters) for p in planner.ask(2).proposals] == expected[1:]


def test_sobol_unit_matches_fresh_engine() -> None:
    full = sobol_unit(3, seed=9, skip=0, n=10)
    assert full.shape == (10, 3)
    assert full.dtype == torch.double
    assert torch.equal(sobol_unit(3, seed=9, skip=4, n=6), full[4:])
    assert float(full.min()) >= 0.0
    assert float(full.max()) < 1.0
