"""Planners asked at the same time on two threads decide as when asked alone."""

from __future__ import annotations

import threading

from models.objectives import Objective
from models.params import SearchSpace
from models.records import Observation
from planners.base import Planner, make_planner
from tests.planners.test_bo import GRID, told


def _planner(space: SearchSpace, objectives: list[Objective]) -> Planner:
    planner = told(make_planner("qlognei", space, objectives, seed=3), GRID[:7])
    # failures: the success classifier's fit draws its initial state from torch's RNG
    planner.tell(
        [
            Observation(parameters=p, objectives={}, feasible=False)
            for p in ({"x1": 1.0, "x2": 1.0}, {"x1": 2.0, "x2": 2.0})
        ]
    )
    return planner


def test_concurrent_asks_decide_as_asks_alone(
    branin_space: SearchSpace, minimize_y: list[Objective]
) -> None:
    alone = _planner(branin_space, minimize_y).ask(2)
    planners = [_planner(branin_space, minimize_y) for _ in range(2)]
    got: list = [None] * len(planners)
    start = threading.Barrier(len(planners))

    def ask(i: int) -> None:
        start.wait()
        got[i] = planners[i].ask(2)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(planners))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    want = [dict(p.parameters) for p in alone.proposals]
    for decision in got:
        assert [dict(p.parameters) for p in decision.proposals] == want
        assert decision.details["feasibility_model"] == alone.details["feasibility_model"]
