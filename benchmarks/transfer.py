"""Transfer between campaigns: experiments to 95 % with and without an earlier campaign.

Each pair is a problem and a related variant of it, the way a lab's campaigns are related
(another batch of precursor, a recalibrated instrument): the earlier campaign measured
``g(x) = a * f(x + shift) + b`` at 25 Sobol points; the new campaign optimises ``f``. The
``qlognei`` planner runs the new campaign twice on the same seeds, in the same process:
once on its own, once with ``related_campaigns`` (a multi-task GP over both,
:mod:`surrogates.multitask`). Both are noise-free and sequential; the score is the number of
experiments until the best value found is within 5 % of the way from the function's median
over the box to its optimum.

Usage::

    python -m benchmarks.transfer [--seeds 0-4] [--budget 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from botorch.test_functions import Branin, Hartmann
from rich.console import Console
from rich.table import Table
from torch.quasirandom import SobolEngine

from models.objectives import Objective
from models.params import ContinuousParameter, SearchSpace
from models.records import Observation
from planners.base import make_planner


@dataclass(frozen=True)
class Pair:
    """A problem (maximised) and its related variant, on the unit box."""

    name: str
    dim: int
    f: Callable[[torch.Tensor], torch.Tensor]  # n x d in [0, 1] -> n
    scale: float
    offset: float
    shift: float


def _branin(x: torch.Tensor) -> torch.Tensor:
    lo = torch.tensor([-5.0, 0.0], dtype=x.dtype)
    hi = torch.tensor([10.0, 15.0], dtype=x.dtype)
    return -Branin().evaluate_true(lo + x * (hi - lo))


def _hartmann3(x: torch.Tensor) -> torch.Tensor:
    return -Hartmann(dim=3).evaluate_true(x)


PAIRS = [
    Pair("branin", 2, _branin, scale=2.0, offset=-30.0, shift=0.04),
    Pair("hartmann3", 3, _hartmann3, scale=0.5, offset=1.0, shift=0.03),
]


def _related(pair: Pair, x: torch.Tensor) -> torch.Tensor:
    return pair.scale * pair.f((x + pair.shift).clamp(0, 1)) + pair.offset


def _threshold(pair: Pair) -> float:
    grid = SobolEngine(pair.dim, scramble=True, seed=0).draw(4096).to(torch.double)
    values = pair.f(grid)
    best = {"branin": -0.397887, "hartmann3": 3.86278}[pair.name]  # the known optima
    median = float(values.median())
    return best - 0.05 * (best - median)


def run_one(pair: Pair, seed: int, budget: int, related: bool) -> tuple[int | None, float]:
    """Experiments to the threshold (``None``: not within ``budget``) and seconds per ask."""
    names = [f"x{i}" for i in range(pair.dim)]
    space = SearchSpace(parameters=[ContinuousParameter(name=n, lower=0, upper=1) for n in names])
    options: dict[str, object] = {}
    if related:
        options["related_campaigns"] = ["earlier"]
    planner = make_planner(
        "qlognei", space, [Objective(name="y", direction="maximize")], seed=seed, options=options
    )
    if related:
        x = SobolEngine(pair.dim, scramble=True, seed=1000 + seed).draw(25).to(torch.double)
        y = _related(pair, x)
        planner.tell_related(
            "earlier",
            [
                Observation(dict(zip(names, map(float, row), strict=True)), {"y": float(v)})
                for row, v in zip(x, y, strict=True)
            ],
        )
    threshold = _threshold(pair)
    seconds = 0.0
    for k in range(1, budget + 1):
        t0 = time.perf_counter()
        decision = planner.ask(1)
        seconds += time.perf_counter() - t0
        point = decision.proposals[0].parameters
        x = torch.tensor([[float(point[n]) for n in names]], dtype=torch.double)
        value = float(pair.f(x)[0])
        planner.tell([Observation(point, {"y": value})])
        if value >= threshold:
            return k, seconds / k
    return None, seconds / budget


def _seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--budget", type=int, default=30)
    args = parser.parse_args(argv)
    seeds = _seeds(args.seeds)
    table = Table(
        title=f"experiments to 95 % (median over seeds {args.seeds}; budget {args.budget})"
    )
    for col in ("problem", "with earlier campaign", "alone (baseline)", "s per ask with / alone"):
        table.add_column(col)
    for pair in PAIRS:
        cells = []
        times = []
        for related in (True, False):
            runs = [run_one(pair, s, args.budget, related) for s in seeds]
            hits = [n if n is not None else args.budget + 1 for n, _ in runs]
            shown = statistics.median(hits)
            missed = sum(n is None for n, _ in runs)
            cells.append(
                f"{shown:g}"
                + (f" ({missed} not within {args.budget})" if missed else "")
                + f"  {hits}"
            )
            times.append(statistics.median(t for _, t in runs))
        table.add_row(pair.name, *cells, f"{times[0]:.2f} / {times[1]:.2f}")
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
