"""Benchmark: how many experiments the ``boundary`` planner needs to map the phase-map world.

For each seed, the ``boundary`` planner and the ``random`` and ``sobol`` baselines run an
ask/tell loop (``--batch`` experiments per ask, default 1) on the ``phase-map`` world's
noise-free truth, in process (no controller, no instruments). At every ``step``
experiments, the points each planner chose so far are fitted with the *same* classifier
(:func:`surrogates.phase.fit_phase_classifier`, default settings), which labels a dense
``grid x grid`` grid; the map accuracy is the fraction of grid points labelled as
``evaluate_true`` labels them. The table reports the median and interquartile range of
the accuracy over seeds against the number of experiments, the number of experiments at
which each planner first reaches ``--target`` accuracy (median over seeds; a seed that
never reaches it counts as ``inf``), and the ratio of random's number to boundary's. The
issue's goal is ``ratio >= 5`` at 90 %. The seconds per decision of each planner are
printed beside each other.

Run it (``boundary`` spends about a second of CPU per decision; batches of 5 make the
20-seed run a matter of minutes on an idle core)::

    nice -n 10 python -m benchmarks.active_learning --seeds 20 --n 60 --batch 5 --out /tmp/al

With ``--world phase-pockets`` each seed maps another layout of :mod:`sim.pockets` (three
large phases, three small pockets of rare phases), scored by macro-averaged accuracy of the
nearest-neighbour map (``--scorer nn``; see :func:`map_accuracy`), where random sampling
struggles::

    nice -n 5 python -m benchmarks.active_learning --world phase-pockets --seeds 20 --n 600 \
        --batch 5 --planners random sobol explore:boundary --budget explore=200 \
        --options '{"explore": {"explore_radius": 0.05}}' --checkpoints 40 80 120 200 400 600

``run(seeds, n_max)`` returns the numbers as a dict (``benchmarks/planner_bench.py`` calls it).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.objectives import Objective
from models.params import ContinuousParameter, ParamValue, SearchSpace
from models.records import Observation
from planners.base import make_planner
from sim.phasemap import PhaseMapWorld
from sim.pockets import PocketWorld, macro_accuracy
from surrogates.phase import fit_phase_classifier

logger = logging.getLogger(__name__)

__all__ = ["main", "map_accuracy", "run", "run_planner"]

PLANNERS = ("boundary", "random", "sobol")
WORLDS = ("phase-map", "phase-pockets")


def _space(world: PhaseMapWorld) -> SearchSpace:
    return SearchSpace(
        parameters=[
            ContinuousParameter(
                name=p.name, lower=float(p.minimum or 0), upper=float(p.maximum or 0)
            )
            for p in world.parameters()
        ]
    )


def map_accuracy(
    world: PhaseMapWorld,
    points: Sequence[Mapping[str, ParamValue]],
    grid: np.ndarray,
    macro: bool = False,
    scorer: str = "gp",
) -> float:
    """Accuracy of the map drawn from ``points`` (labelled by the truth) on ``grid``.

    Args:
        world: The phase-map world.
        points: Measured points.
        grid: ``g x d`` points (the world's units) to score on.
        macro: Score the macro-averaged accuracy (:func:`sim.pockets.macro_accuracy`: the
            mean over phases of the fraction of each phase's grid points labelled right)
            instead of the fraction of all grid points.
        scorer: How the map is drawn: ``"gp"``, the Dirichlet GP classifier
            (:func:`surrogates.phase.fit_phase_classifier`, default settings, every phase
            of the world); ``"nn"``, each grid point takes the label of the nearest
            measured point (unit-cube distance; the Voronoi map of the data, which shows
            a pocket as soon as a point lies in it).

    Returns:
        The fraction of grid points whose predicted phase equals the true phase (or its
        macro average).
    """
    lo, hi = world.bounds
    x = np.array([[float(p[n]) for n in world.parameter_names] for p in points])
    labels = world.evaluate_array(x)
    ux, ug = (x - lo) / (hi - lo), (grid - lo) / (hi - lo)
    if scorer == "nn":
        nearest = ((ug[:, None, :] - ux[None, :, :]) ** 2).sum(axis=-1).argmin(axis=1)
        predicted = labels[nearest]
    elif scorer == "gp":
        model = fit_phase_classifier(torch.from_numpy(ux), torch.from_numpy(labels), world.n_phases)
        predicted = model.predict_labels(torch.from_numpy(ug)).numpy()
    else:
        raise ValueError(f"unknown scorer {scorer!r} (gp, nn)")
    truth = world.evaluate_array(grid)
    if macro:
        return macro_accuracy(predicted, truth)
    return float((predicted == truth).mean())


def run_planner(
    name: str,
    world: PhaseMapWorld,
    seed: int,
    n_max: int,
    checkpoints: Sequence[int],
    grid: np.ndarray,
    options: Mapping[str, Any] | None = None,
    batch: int = 1,
    macro: bool = False,
    scorer: str = "gp",
) -> tuple[list[float], float]:
    """One planner's ask/tell loop (``batch`` experiments per ask); the map accuracy at
    each checkpoint (checkpoints inside a batch are scored when the batch is told).

    Returns:
        ``(accuracies, seconds_per_ask)``.
    """
    planner = make_planner(
        name.rpartition(":")[2],
        _space(world),
        [Objective(name="phase", direction="maximize")],
        seed=seed,
        options=options,
    )
    points: list[dict[str, ParamValue]] = []
    accuracies: list[float] = []
    asking = 0.0
    asks = 0
    while len(points) < n_max:
        t0 = time.perf_counter()
        decision = planner.ask(min(batch, n_max - len(points)))
        asking += time.perf_counter() - t0
        asks += 1
        new = [dict(p.parameters) for p in decision.proposals]
        planner.tell(
            [
                Observation(
                    parameters=p,
                    objectives=world.evaluate_true({k: float(v) for k, v in p.items()}),
                )
                for p in new
            ]
        )
        before = len(points)
        points.extend(new)
        for k in checkpoints:
            if before < k <= len(points):
                accuracies.append(map_accuracy(world, points[:k], grid, macro, scorer))
    return accuracies, asking / asks


def _first_reaching(n: Sequence[int], acc: Sequence[float], target: float) -> float:
    return next((float(k) for k, a in zip(n, acc, strict=True) if a >= target), math.inf)


def run(
    seeds: list[int],
    n_max: int,
    *,
    step: int = 5,
    grid: int = 50,
    target: float = 0.9,
    planners: Sequence[str] = PLANNERS,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    batch: int = 1,
    world: str = "phase-map",
    checkpoints: Sequence[int] | None = None,
    budgets: Mapping[str, int] | None = None,
    scorer: str | None = None,
) -> dict[str, Any]:
    """Run every planner on every seed and summarise map accuracy against experiments.

    Args:
        seeds: Campaign seeds (one run per planner and seed).
        n_max: Experiments per run.
        step: Accuracy is measured every ``step`` experiments (and at ``n_max``).
        grid: Points per axis of the scoring grid.
        target: Accuracy whose first crossing is reported.
        planners: Planner names (``"boundary"`` must be among them for the ratio); an
            entry ``LABEL:NAME`` runs planner ``NAME`` reported (and given options) as
            ``LABEL``, so one planner can run with two settings.
        options: Planner options by planner name.
        batch: Experiments proposed per ask.
        world: ``"phase-map"`` (one world, accuracy) or ``"phase-pockets"`` (the pocket
            world of :mod:`sim.pockets` with ``layout_seed`` = the seed, so each seed maps
            another layout; scored by macro-averaged accuracy).
        checkpoints: Experiment counts at which the map is scored (default: every
            ``step`` and ``n_max``).
        budgets: Experiments per run of some planners, if not ``n_max`` (their accuracy
            at later checkpoints is that of their last one; never above ``n_max``).
        scorer: How a map is drawn from the points (:func:`map_accuracy`); default
            ``"gp"`` on ``phase-map``, ``"nn"`` on ``phase-pockets`` (the GP classifier
            does not draw a pocket from the two or three points in it: the pseudo-labels
            of its Dirichlet likelihood give a single point's class too little weight
            against a large phase's long lengthscale).

    Returns:
        ``{"n": checkpoints, "target", "planners": {name: {"median", "q25", "q75"
        (accuracy per checkpoint), "per_seed" (accuracy lists), "n_target" (per seed),
        "n_target_median", "seconds_per_ask"}}, "ratio_random_over_boundary",
        "goal_met"}``.
    """
    if not seeds or n_max < 1 or step < 1:
        raise ValueError("need at least one seed, n_max >= 1 and step >= 1")
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}; one of {', '.join(WORLDS)}")
    macro = world == "phase-pockets"
    scorer = scorer or ("nn" if macro else "gp")
    if checkpoints is None:
        checkpoints = sorted({*range(step, n_max + 1, step), n_max})
    else:
        checkpoints = sorted({k for k in checkpoints if 0 < k <= n_max} | {n_max})
    out: dict[str, Any] = {
        "n": checkpoints,
        "target": target,
        "batch": batch,
        "world": world,
        "metric": ("macro accuracy" if macro else "accuracy") + f" ({scorer} map)",
        "planners": {},
    }
    for name in planners:
        runs, secs = [], []
        budget = min(n_max, (budgets or {}).get(name.partition(":")[0], n_max))
        mine = [k for k in checkpoints if k <= budget]
        for seed in seeds:
            the_world = PocketWorld(layout_seed=seed) if macro else PhaseMapWorld()
            acc, s = run_planner(
                name,
                the_world,
                seed,
                budget,
                mine,
                the_world.grid(grid),
                (options or {}).get(name.partition(":")[0]),
                batch,
                macro,
                scorer,
            )
            acc += [acc[-1]] * (len(checkpoints) - len(acc))
            runs.append(acc)
            secs.append(s)
            logger.info("%s seed %d: %s", name, seed, [round(a, 3) for a in acc])
        arr = np.array(runs)
        reach = [_first_reaching(mine, r[: len(mine)], target) for r in runs]
        out["planners"][name] = {
            "median": np.median(arr, axis=0).tolist(),
            "q25": np.quantile(arr, 0.25, axis=0).tolist(),
            "q75": np.quantile(arr, 0.75, axis=0).tolist(),
            "per_seed": runs,
            "n_target": reach,
            "n_target_median": float(np.median(reach)),
            "seconds_per_ask": float(np.mean(secs)),
            "budget": budget,
        }
    got = out["planners"]
    ratio = math.nan
    at_least = False
    if "boundary" in got and "random" in got:
        b, r = got["boundary"]["n_target_median"], got["random"]["n_target_median"]
        if math.isfinite(b) and not math.isfinite(r):
            # random's median run never reached the target: its number exceeds its budget
            r, at_least = float(got["random"]["budget"]), True
        ratio = r / b if math.isfinite(b) else math.nan
    out["ratio_random_over_boundary"] = ratio
    out["ratio_is_lower_bound"] = at_least
    out["goal_met"] = bool(ratio >= 5.0)
    return out


def format_table(result: Mapping[str, Any]) -> str:
    """The printed report of :func:`run`'s result."""
    names = list(result["planners"])
    metric = result.get("metric", "accuracy")
    lines = [
        f"{result.get('world', 'phase-map')}: map {metric} (median [IQR] over seeds) vs "
        f"experiments, {result['batch']} per ask"
    ]
    lines.append(f"{'N':>5} " + " ".join(f"{n:>22}" for n in names))
    for i, n in enumerate(result["n"]):
        cells = []
        for name in names:
            p = result["planners"][name]
            cells.append(f"{p['median'][i]:.3f} [{p['q25'][i]:.3f}, {p['q75'][i]:.3f}]")
        lines.append(f"{n:>5} " + " ".join(f"{c:>22}" for c in cells))
    t = result["target"]
    lines.append(f"experiments to reach {t:.0%} {metric} (median over seeds):")
    for name in names:
        p = result["planners"][name]
        reached = sum(math.isfinite(v) for v in p["n_target"])
        lines.append(
            f"  {name:>10}: {p['n_target_median']:g}  (reached in {reached}/{len(p['n_target'])}"
            f" seeds; {p['seconds_per_ask'] * 1e3:.1f} ms per decision)"
        )
    bound = "> " if result.get("ratio_is_lower_bound") else ""
    lines.append(
        f"ratio random/boundary: {bound}{result['ratio_random_over_boundary']:.2f} "
        f"(goal >= 5: {'met' if result['goal_met'] else 'not met'})"
    )
    return "\n".join(lines)


def plot(result: Mapping[str, Any], path: Path) -> None:
    """Write a PNG of accuracy vs experiments (median and IQR band per planner)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, p in result["planners"].items():
        ax.plot(result["n"], p["median"], label=name)
        ax.fill_between(result["n"], p["q25"], p["q75"], alpha=0.2)
    ax.axhline(result["target"], color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("experiments")
    ax.set_ylabel("map accuracy (phase-map world)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``--seeds K --n N [--step S] [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="number of seeds (0..K-1)")
    parser.add_argument("--n", type=int, default=100, help="experiments per run")
    parser.add_argument("--step", type=int, default=5, help="accuracy every STEP experiments")
    parser.add_argument("--grid", type=int, default=50, help="scoring grid points per axis")
    parser.add_argument("--batch", type=int, default=1, help="experiments per ask")
    parser.add_argument("--out", type=Path, default=None, help="directory for the PNG")
    parser.add_argument("--world", choices=WORLDS, default="phase-map")
    parser.add_argument("--target", type=float, default=0.9, help="accuracy to reach")
    parser.add_argument("--planners", nargs="+", default=list(PLANNERS))
    parser.add_argument("--checkpoints", type=int, nargs="+", default=None)
    parser.add_argument("--scorer", choices=("gp", "nn"), default=None)
    parser.add_argument(
        "--budget", nargs="+", default=[], help="NAME=N: experiments per run of a planner"
    )
    parser.add_argument(
        "--options", default="{}", help='JSON planner options by name, {"boundary": {...}}'
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    budgets = {k: int(v) for k, v in (b.split("=", 1) for b in args.budget)}
    result = run(
        list(range(args.seeds)),
        args.n,
        step=args.step,
        grid=args.grid,
        batch=args.batch,
        target=args.target,
        planners=args.planners,
        options=json.loads(args.options),
        world=args.world,
        checkpoints=args.checkpoints,
        budgets=budgets,
        scorer=args.scorer,
    )
    print(format_table(result))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        plot(result, args.out / "active_learning.png")
        print(f"plot: {args.out / 'active_learning.png'}")


if __name__ == "__main__":
    main()
