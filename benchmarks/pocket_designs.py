"""What the ``boundary`` planner's geometric terms reach on ``phase-pockets`` by themselves.

The ``boundary`` planner with ``explore_radius`` and ``label_gaps`` picks the larger of a
coverage score (holes of the design wider than ``rho``) and a label-gap score (bisecting
the gaps between differently labelled neighbours), beside the classifier's boundary score
(:mod:`planners.boundary`). On ``phase-pockets`` the map is scored as the nearest-neighbour
map of the measured points, so the classifier only steers where points go. This benchmark
runs the two geometric terms alone, with no classifier (seconds instead of minutes a run),
to see whether any coverage radius or order of the two terms gets within the 5x aim:
random search needs 800 experiments to 90 % macro accuracy (``benchmarks/active_learning.py``,
20 layouts), so the aim is 90 % within 160.

* ``max``: the planner's rule, the larger of coverage and label-gap scores per candidate;
* ``cover-first``: coverage alone until no candidate's coverage score is above 0.5 (no hole
  left much wider than ``rho``), then label gaps alone.

Each configuration prints the median [quartiles] macro accuracy over the layouts at each
checkpoint, how many layouts reached 90 %, and at ``--diagnose N``: the layouts in which a
pocket was never measured and the median number of points that landed in the pockets.

    python -m benchmarks.pocket_designs --layouts 20 --radii 0.04 0.06 0.08 0.1
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import qmc

from benchmarks.active_learning import map_accuracy
from planners.boundary import _label_gaps, _penalty
from sim.pockets import PocketWorld

RULES = ("max", "cover-first")


def run_design(
    layout: int,
    rho: float,
    rule: str,
    checkpoints: Sequence[int],
    *,
    batch: int = 5,
    initial: int = 10,
    n_candidates: int = 4096,
    grid: int = 50,
) -> tuple[dict[int, float], dict[int, list[int]]]:
    """One geometric design on layout ``layout``: macro accuracy of the nearest-neighbour map
    at each checkpoint (scored as ``benchmarks/active_learning.py`` scores random and Sobol:
    :func:`~benchmarks.active_learning.map_accuracy` on the world's ``grid x grid`` cell
    centres), and the points per phase measured by then."""
    world = PocketWorld(layout_seed=layout)
    lo, hi = (np.asarray(b, dtype=float) for b in world.bounds)
    scoring = world.grid(grid)
    phases = np.unique(world.evaluate_array(scoring))

    def label(u: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(world.evaluate_array(lo + u.numpy() * (hi - lo))).long()

    cand = torch.from_numpy(qmc.Sobol(2, seed=layout).random(n_candidates))
    with warnings.catch_warnings():  # a Sobol design of 10 is not a power of 2, and need not be
        warnings.simplefilter("ignore", UserWarning)
        x = torch.from_numpy(qmc.Sobol(2, seed=layout + 1000).random(initial))
    y = label(x)
    radius = torch.full((2,), rho, dtype=torch.float64)
    accuracy: dict[int, float] = {}
    counts: dict[int, list[int]] = {}
    while len(x) < max(checkpoints):
        cover = _penalty(cand, x, radius)
        gaps = _label_gaps(cand, x, y, rho)
        if rule == "max":
            total = torch.maximum(cover, gaps)
        elif float(cover.max()) > 0.5:
            total = cover
        else:
            total = gaps
        picks: list[int] = []
        for _ in range(batch):
            i = int(total.argmax())
            picks.append(i)
            total = total * _penalty(cand, cand[i : i + 1], radius)
            total[i] = -1.0
        before = len(x)
        x = torch.cat([x, cand[picks]])
        y = torch.cat([y, label(cand[picks])])
        for k in checkpoints:
            if before < k <= len(x):
                points = [
                    dict(zip(world.parameter_names, map(float, lo + u * (hi - lo)), strict=True))
                    for u in x[:k].numpy()
                ]
                accuracy[k] = map_accuracy(world, points, scoring, macro=True, scorer="nn")
                counts[k] = [int((y[:k] == c).sum()) for c in phases]
    return accuracy, counts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", type=int, default=20, help="layout seeds 0..K-1")
    parser.add_argument("--radii", type=float, nargs="+", default=[0.04, 0.06, 0.08, 0.1])
    parser.add_argument("--rules", nargs="+", choices=RULES, default=list(RULES))
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[80, 120, 160, 200])
    parser.add_argument("--diagnose", type=int, default=160, help="checkpoint to diagnose")
    args = parser.parse_args(argv)
    checkpoints = sorted({*args.checkpoints, args.diagnose})
    for rule in args.rules:
        for rho in args.radii:
            runs = [run_design(s, rho, rule, checkpoints) for s in range(args.layouts)]
            print(f"{rule}, rho = {rho}:")
            for k in checkpoints:
                acc = np.array([r[0][k] for r in runs])
                q1, q3 = np.percentile(acc, [25, 75])
                print(
                    f"  N = {k:4d}: {np.median(acc):.3f} [{q1:.3f}, {q3:.3f}], "
                    f">= 90 % in {(acc >= 0.9).sum()}/{len(acc)}"
                )
            rare = np.array([r[1][args.diagnose][3:] for r in runs])  # phases 3.. are pockets
            missed = [s for s, row in enumerate(rare) if (row == 0).any()]
            print(
                f"  at N = {args.diagnose}: points in the pockets (median) "
                f"{int(np.median(rare.sum(axis=1)))}, a pocket never measured in layouts "
                f"{missed or 'none'}"
            )


if __name__ == "__main__":
    main()
