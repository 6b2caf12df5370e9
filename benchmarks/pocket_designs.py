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
  left much wider than ``rho``), then label gaps alone;
* ``lattice``: first a hexagonal lattice whose every point of the square lies within
  ``--lattice-radius`` of a lattice point (about ``1 / (2.6 r^2)`` points inside, plus those
  moved onto the edges; at a random offset per layout, taken in farthest-point order),
  then label gaps weighted by rarity: a candidate's gap score times
  ``(n / n_rare) ** --rare-weight``, where ``n_rare`` is the number of measured points of
  the rarer of the two labels the gap lies between (the macro average weighs every phase
  alike, so a pocket's boundary counts as much as a large phase's);
* ``random`` and ``sobol``: the baselines, measured on the same layouts in the same run.

Each configuration prints the median [quartiles] macro accuracy over the layouts at each
checkpoint, how many layouts reached 90 %, and at ``--diagnose N``: the layouts in which a
pocket was never measured and the median number of points that landed in the pockets.

    python -m benchmarks.pocket_designs --layouts 20 --radii 0.04 0.06 0.08 0.1
    python -m benchmarks.pocket_designs --rules lattice random sobol --radii 0.04 --first 20
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import qmc

from benchmarks.active_learning import map_accuracy
from planners.boundary import _label_gaps, _penalty
from sim.pockets import PocketWorld

RULES = ("max", "cover-first", "lattice", "random", "sobol")


def hex_lattice(radius: float, offset: np.ndarray) -> np.ndarray:
    """A hexagonal lattice of covering radius ``radius`` (spacing ``radius * sqrt(3)``),
    shifted by ``offset`` (two numbers in [0, 1)), on the unit square: its points inside,
    and those outside but within ``radius`` of it moved onto its edge, so that every place
    of the square is within ``radius`` of a point (moving a point onto the square brings it
    nearer to every place in it)."""
    s = radius * math.sqrt(3.0)
    h = s * math.sqrt(3.0) / 2.0
    rows = np.arange(-2, math.ceil(1.0 / h) + 2)
    cols = np.arange(-2, math.ceil(1.0 / s) + 2)
    ys = offset[1] * 2.0 * h + rows * h
    points = [
        (offset[0] * s + c * s + (s / 2.0 if r % 2 else 0.0), y)
        for r, y in zip(rows, ys, strict=True)
        for c in cols
    ]
    p = np.array(points)
    inside = p.clip(0.0, 1.0)
    near = np.linalg.norm(p - inside, axis=1) <= radius
    return np.unique(inside[near].round(12), axis=0)


def farthest_first(points: np.ndarray) -> np.ndarray:
    """``points`` reordered so that each is the farthest from those before it."""
    order = [0]
    dist = np.linalg.norm(points - points[0], axis=1)
    for _ in range(len(points) - 1):
        i = int(dist.argmax())
        order.append(i)
        dist = np.minimum(dist, np.linalg.norm(points - points[i], axis=1))
    return points[order]


def _rarity(cand: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``n / n_rare`` per candidate: the measured points over those of the rarer label of the
    candidate's nearest point and its nearest point of another label."""
    dist = torch.cdist(cand, x)
    nearest = dist.argmin(dim=1)
    other = y[nearest].unsqueeze(1) != y.unsqueeze(0)
    across = torch.where(other, dist, torch.full_like(dist, math.inf)).argmin(dim=1)
    counts = torch.bincount(y, minlength=int(y.max()) + 1).double()
    return len(x) / torch.minimum(counts[y[nearest]], counts[y[across]])


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
    lattice_radius: float = 0.07,
    rare_weight: float = 1.0,
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
    n_max = max(checkpoints)
    with warnings.catch_warnings():  # a Sobol design of 10 is not a power of 2, and need not be
        warnings.simplefilter("ignore", UserWarning)
        if rule == "random":
            x = torch.from_numpy(np.random.default_rng(layout).random((n_max, 2)))
        elif rule == "sobol":
            x = torch.from_numpy(qmc.Sobol(2, seed=layout + 1000).random(n_max))
        elif rule == "lattice":
            offset = np.random.default_rng(layout).random(2)
            x = torch.from_numpy(farthest_first(hex_lattice(lattice_radius, offset))[:n_max])
        else:
            x = torch.from_numpy(qmc.Sobol(2, seed=layout + 1000).random(initial))
    y = label(x)
    radius = torch.full((2,), rho, dtype=torch.float64)
    accuracy: dict[int, float] = {}
    counts: dict[int, list[int]] = {}
    for k in checkpoints:
        if k <= len(x):
            accuracy[k], counts[k] = _score(world, lo, hi, scoring, phases, x, y, k)
    while len(x) < n_max:
        cover = _penalty(cand, x, radius)
        gaps = _label_gaps(cand, x, y, rho)
        if rule == "lattice":
            total = gaps * _rarity(cand, x, y) ** rare_weight
        elif rule == "max":
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
                accuracy[k], counts[k] = _score(world, lo, hi, scoring, phases, x, y, k)
    return accuracy, counts


def _score(
    world: PocketWorld,
    lo: np.ndarray,
    hi: np.ndarray,
    scoring: np.ndarray,
    phases: np.ndarray,
    x: torch.Tensor,
    y: torch.Tensor,
    k: int,
) -> tuple[float, list[int]]:
    """Macro accuracy of the nearest-neighbour map of the first ``k`` points, and their
    count per phase."""
    points = [
        dict(zip(world.parameter_names, map(float, lo + u * (hi - lo)), strict=True))
        for u in x[:k].numpy()
    ]
    accuracy = map_accuracy(world, points, scoring, macro=True, scorer="nn")
    return accuracy, [int((y[:k] == c).sum()) for c in phases]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", type=int, default=20, help="layout seeds 0..K-1")
    parser.add_argument("--radii", type=float, nargs="+", default=[0.04, 0.06, 0.08, 0.1])
    parser.add_argument("--rules", nargs="+", choices=RULES, default=list(RULES))
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[80, 120, 160, 200])
    parser.add_argument("--diagnose", type=int, default=160, help="checkpoint to diagnose")
    parser.add_argument("--first", type=int, default=0, help="first layout seed")
    parser.add_argument("--lattice-radius", type=float, default=0.07)
    parser.add_argument("--rare-weight", type=float, default=1.0)
    args = parser.parse_args(argv)
    checkpoints = sorted({*args.checkpoints, args.diagnose})
    layouts = range(args.first, args.first + args.layouts)
    for rule in args.rules:
        for rho in args.radii if rule not in ("random", "sobol") else args.radii[:1]:
            runs = [
                run_design(
                    s,
                    rho,
                    rule,
                    checkpoints,
                    lattice_radius=args.lattice_radius,
                    rare_weight=args.rare_weight,
                )
                for s in layouts
            ]
            extra = (
                f", lattice radius {args.lattice_radius}, rare weight {args.rare_weight}"
                if rule == "lattice"
                else ""
            )
            print(f"{rule}, rho = {rho}{extra} (layouts {layouts.start}-{layouts.stop - 1}):")
            for k in checkpoints:
                acc = np.array([r[0][k] for r in runs])
                q1, q3 = np.percentile(acc, [25, 75])
                print(
                    f"  N = {k:4d}: {np.median(acc):.3f} [{q1:.3f}, {q3:.3f}], "
                    f">= 90 % in {(acc >= 0.9).sum()}/{len(acc)}"
                )
            rare = np.array([r[1][args.diagnose][3:] for r in runs])  # phases 3.. are pockets
            missed = [layouts[i] for i, row in enumerate(rare) if (row == 0).any()]
            print(
                f"  at N = {args.diagnose}: points in the pockets (median) "
                f"{int(np.median(rare.sum(axis=1)))}, a pocket never measured in layouts "
                f"{missed or 'none'}"
            )


if __name__ == "__main__":
    main()
