"""Benchmark: cost-aware multi-fidelity BO against single-fidelity qLogNEI and random search.

Each planner runs on the noise-free ``augmented-branin`` world (or ``augmented-hartmann6``)
sequentially (one experiment at a time) until the next experiment would pass the cost
budget; a measurement at fidelity ``s`` costs ``fixed_cost + cost_per_fidelity * s``
(default ``1 + 9 s``: the accurate measurement costs ten screening ones).

* ``mfbo``: :class:`planners.multifidelity.MultiFidelityPlanner`, fidelity free in
  ``[0, 1]``;
* ``qlognei``: :class:`planners.bo.QLogNEIPlanner` on the design inputs only, every
  measurement at the target fidelity (cost ``fixed + per``);
* ``qlognei-screen``: qLogNEI on the design inputs with every measurement at fidelity 0
  (cost ``fixed``): many cheap, biased measurements and no model of the bias;
* ``random``: uniform design inputs at the target fidelity.

The score after cost ``c`` is the best *target-fidelity* truth over the points measured
with cost spent ``<= c`` (for ``mfbo`` a point measured at low fidelity counts with its
value at the target fidelity: a lab would re-measure it accurately), reported as simple
regret ``f* - best`` at cost checkpoints, median and interquartile range over seeds.

Usage::

    nice -n 10 .venv/bin/python -m benchmarks.multifidelity --seeds 10 --budget 40
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.objectives import Objective
from models.params import ContinuousParameter, SearchSpace
from models.records import Observation
from planners.base import Planner, make_planner
from sim.multifidelity import FIDELITY, MultiFidelityWorld
from sim.worlds import get_world

PLANNERS = ("mfbo", "qlognei", "qlognei-screen", "random")
"""The planners compared, in table order."""


def _space(world: MultiFidelityWorld, with_fidelity: bool) -> SearchSpace:
    params = [
        ContinuousParameter(
            name=p.name, lower=float(p.minimum or 0.0), upper=float(p.maximum or 0.0)
        )
        for p in world.parameters()
        if with_fidelity or p.name != FIDELITY
    ]
    return SearchSpace(parameters=params)


def trace(
    planner_name: str,
    seed: int,
    budget: float,
    *,
    world_name: str = "augmented-branin",
    fixed_cost: float = 1.0,
    cost_per_fidelity: float = 9.0,
    options: dict[str, Any] | None = None,
) -> list[tuple[float, float, float]]:
    """Run one planner to the cost budget.

    Returns:
        One ``(cost spent, fidelity, target-fidelity truth)`` per experiment, in order.
    """
    world = get_world(world_name)
    assert isinstance(world, MultiFidelityWorld)
    fixed_fid = 0.0 if planner_name == "qlognei-screen" else 1.0
    planner_name = "qlognei" if planner_name == "qlognei-screen" else planner_name
    objective = [Objective(name="y", direction="maximize")]
    opts: dict[str, Any] = {"num_restarts": 4, "raw_samples": 128, "maxiter": 100}
    if planner_name == "mfbo":
        opts.update(fidelity=FIDELITY, fixed_cost=fixed_cost, cost_per_fidelity=cost_per_fidelity)
    elif planner_name == "random":
        opts = {}
    opts.update(options or {})
    planner: Planner = make_planner(
        planner_name,
        _space(world, planner_name == "mfbo"),
        objective,
        seed=seed,
        options=opts,
    )
    spent, out = 0.0, []
    while True:
        point = dict(planner.ask(1).proposals[0].parameters)
        fid = float(point.get(FIDELITY, fixed_fid))
        cost = fixed_cost + cost_per_fidelity * fid
        if spent + cost > budget * (1 + 1e-12):
            return out
        spent += cost
        measured = world.evaluate_true({**point, FIDELITY: fid})["y"]
        out.append((spent, fid, world.evaluate_target(point)["y"]))
        planner.tell([Observation(parameters=point, objectives={"y": measured})])


def best_at(history: Sequence[tuple[float, float, float]], cost: float) -> float:
    """Best target-fidelity truth among the experiments paid for within ``cost``."""
    values = [v for c, _, v in history if c <= cost]
    return max(values) if values else float("-inf")


def run(
    seeds: Sequence[int] | int = 10,
    budget: float = 40.0,
    *,
    planners: Sequence[str] = PLANNERS,
    world: str = "augmented-branin",
    checkpoints: Sequence[float] | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run every planner for every seed.

    Args:
        seeds: Seeds, or how many (``0 .. n-1``).
        budget: Cost budget of each run (a measurement at the target fidelity costs 10).
        planners: Planner names (of :data:`PLANNERS`).
        world: A multi-fidelity world.
        checkpoints: Costs at which regret is reported (default: quarters of the budget).
        verbose: Print a line per run to standard error.

    Returns:
        ``{"world", "optimum", "budget", "checkpoints", "planners": {name: {"regret":
        [[per seed] per checkpoint], "median": [...], "q1": [...], "q3": [...],
        "n_experiments": median count, "mean_fidelity": [...], "seconds": total}}}``.
    """
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    marks = list(checkpoints or [budget * k / 4 for k in (1, 2, 3, 4)])
    w = get_world(world)
    assert w.optimal_value is not None
    opt = float(w.optimal_value)
    result: dict[str, Any] = {
        "world": world,
        "optimum": opt,
        "budget": budget,
        "checkpoints": marks,
        "seeds": seed_list,
        "planners": {},
    }
    for name in planners:
        t0 = time.perf_counter()
        histories = []
        for s in seed_list:
            histories.append(trace(name, s, budget, world_name=world))
            if verbose:
                h = histories[-1]
                print(
                    f"{name} seed {s}: {len(h)} experiments, regret {opt - best_at(h, budget):.4f}"
                    f" ({time.perf_counter() - t0:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
        regret = [[opt - best_at(h, c) for h in histories] for c in marks]
        result["planners"][name] = {
            "regret": regret,
            "median": [statistics.median(r) for r in regret],
            "q1": [float(np.percentile(r, 25)) for r in regret],
            "q3": [float(np.percentile(r, 75)) for r in regret],
            "n_experiments": statistics.median(len(h) for h in histories),
            "mean_fidelity": statistics.mean(f for h in histories for _, f, _ in h),
            "seconds": time.perf_counter() - t0,
        }
    return result


def table(result: dict[str, Any]) -> str:
    """The result as a plain-text table: median regret [IQR] at each cost checkpoint."""
    marks = result["checkpoints"]
    head = f"{'planner':<15}" + "".join(f"{'cost ' + format(c, 'g'):>27}" for c in marks)
    head += f"{'experiments':>13}{'mean fid':>10}{'seconds':>9}"
    lines = [
        f"{result['world']}: simple regret at the target fidelity (f* = {result['optimum']:g}),"
        f" median [IQR] over {len(result['seeds'])} seeds",
        head,
    ]
    for name, r in result["planners"].items():
        cells = "".join(
            f"{f'{m:.4f} [{a:.4f}, {b:.4f}]':>27}"
            for m, a, b in zip(r["median"], r["q1"], r["q3"], strict=True)
        )
        lines.append(
            f"{name:<15}{cells}{r['n_experiments']:>13g}{r['mean_fidelity']:>10.2f}"
            f"{r['seconds']:>9.1f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=float, default=40.0)
    parser.add_argument("--world", default="augmented-branin")
    parser.add_argument("--planners", default=",".join(PLANNERS))
    args = parser.parse_args(argv)
    result = run(
        args.seeds,
        args.budget,
        planners=args.planners.split(","),
        world=args.world,
        verbose=True,
    )
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
