"""Planners without a store: ``make_planner``, ``ask`` and ``tell``, and a planner of your own.

docs/python.md ("Planners directly") walks through this script; the test suite runs it.
Run from the repository root:  python examples/planner_api.py
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from models.objectives import Objective
from models.params import ContinuousParameter, ParamValue, SearchSpace
from models.records import Decision, Observation, Proposal
from planners.base import Planner, PlannerOptions, make_planner, register_planner


def branin(point: Mapping[str, ParamValue]) -> float:
    """The Branin function of a point's ``x1`` and ``x2`` (minimum 0.397887, at three points)."""
    x1, x2 = float(point["x1"]), float(point["x2"])
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


space = SearchSpace(
    parameters=[
        ContinuousParameter(name="x1", lower=-5, upper=10),
        ContinuousParameter(name="x2", lower=0, upper=15),
    ]
)
objectives = [Objective(name="y", direction="minimize")]


# 1. A built-in planner, asked and told by hand: two experiments at a time, the second ask
#    made while the first batch still runs (it is passed as pending, as the controller does).
planner = make_planner("qlognei", space, objectives, seed=7, options={"initial_points": 6})
running: list[dict[str, ParamValue]] = []
for _ in range(8):
    decision = planner.ask(2, pending=running)
    new = [dict(p.parameters) for p in decision.proposals]
    finished, running = running, new
    planner.tell([Observation(parameters=p, objectives={"y": branin(p)}) for p in finished])
    print(f"{decision.details.get('phase', decision.planner):>15}: asked 2, {len(finished)} told")
best = min(planner.observations, key=lambda o: o.objectives["y"])
print(f"qlognei best y = {best.objectives['y']:.4f} after {len(planner.observations)} experiments")


# 2. A planner of your own: a subclass, a name, options, and an ask. Its random choices come
#    from decision_seed, so a planner rebuilt from the same observations decides the same.
@register_planner("example-local")
class LocalSearch(Planner):
    """Propose points around the best one so far, in a box that shrinks as data grows."""

    version = "1"

    class Options(PlannerOptions):
        width: float = 0.25  # the box's half-width, as a fraction of each range, at first

    def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]] = ()) -> Decision:
        import time

        started = time.perf_counter()
        self.check_ask(n, pending)
        seed, _ = self.decision_seed(len(pending))
        rng = np.random.default_rng(seed)
        done = [o for o in self.observations if o.feasible]
        obj = self.objectives[0]
        width = self.options.width / math.sqrt(1 + len(done))  # type: ignore[attr-defined]
        proposals = []
        for _ in range(n):
            point: dict[str, ParamValue] = {}
            for p in self.space.parameters:
                lo, hi = float(p.lower), float(p.upper)  # type: ignore[union-attr]
                if done:
                    top = max(done, key=lambda o: obj.utility(o.objectives[obj.name]))
                    centre = float(top.parameters[p.name])
                    half = width * (hi - lo)
                    point[p.name] = float(
                        np.clip(rng.uniform(centre - half, centre + half), lo, hi)
                    )
                else:
                    point[p.name] = float(rng.uniform(lo, hi))
            proposals.append(Proposal(parameters=point, origin="local"))
        return self.decision(proposals, len(pending), started, {"width": width})


mine = make_planner("example-local", space, objectives, seed=7, options={"width": 0.3})
mine.tell(list(planner.observations))  # start from what qlognei measured
for _ in range(5):
    points = [dict(p.parameters) for p in mine.ask(4).proposals]
    mine.tell([Observation(parameters=p, objectives={"y": branin(p)}) for p in points])
top = min(mine.observations, key=lambda o: o.objectives["y"])
print(
    f"example-local best y = {top.objectives['y']:.4f} after {len(mine.observations)} experiments"
)

rebuilt = make_planner("example-local", space, objectives, seed=7, options={"width": 0.3})
rebuilt.tell(list(mine.observations))
again = make_planner("example-local", space, objectives, seed=7, options={"width": 0.3})
again.tell(list(mine.observations))
assert rebuilt.ask(2).proposals == again.ask(2).proposals  # same observations, same decision
print("a planner rebuilt from the same observations decides the same")
