"""Benchmark: targets obtained by the ``alab`` planner's strategies for a fixed furnace budget.

In-process (planner ``ask``/``tell`` against the simulated A-Lab world, no controller): each
strategy of the ``alab`` planner (:mod:`planners.alab`) plans recipes for every target of
the world until ``--budget`` furnace runs are spent or it has finished (every target made
or given up). Recipes run ``--batch`` at a time (the furnaces heat concurrently; the planner
is asked for a batch, then told its results).

The world (``sim.alab.world.AlabWorld``, or any object with the same methods: ``targets()``,
``precursors()``, ``thermo_entries()``, ``react(target, precursors, temperature_c)``) gives
the noise-free weight fractions of a recipe's products. The planner sees them as the XRD
analysis would report them: each fraction plus Gaussian noise of ``--noise`` (weight
fraction), clipped at zero and renormalised; phases under ``--detection`` are not reported.
A target counts as obtained when one of its recipes truly (noise-free) gave a target weight
fraction of at least ``--threshold`` (0.5). Strategies:

* ``arrows``: first recipes by driving force, then ARROWS3 re-ranking from the observed
  pairwise reactions (the planner's default);
* ``first_recipe``: only the best-ranked first recipe of each target, at every temperature
  of the grid (the A-Lab's literature-inspired recipe without active learning);
* ``random``: a random balanced precursor set at a random grid temperature.

Printed: per strategy, the targets obtained (median and interquartile range over the
seeds), the furnace runs used, the targets the planner gave up, and the planning time.

The furnaces' hottest setting is ``--t-max`` (1100 degC by default, the working limit of
common box furnaces). It matters: in the simulated world every target is eventually made by
heating its first recipe hot enough (1400 degC), so only a ceiling below that makes the
choice of precursors decide the outcome, as it does in a real lab.

Usage::

    nice -n 10 python -m benchmarks.alab --seeds 5 --budget 60 --cache-dir examples/data/alab
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from models.objectives import Objective
from models.params import ContinuousParameter, SearchSpace, StringParameter
from models.records import Observation
from planners.alab import AlabPlanner
from planners.base import make_planner

STRATEGIES = ("arrows", "first_recipe", "random")
OBJECTIVE = "target_yield"


class World(Protocol):
    """What the benchmark needs of a simulated A-Lab world."""

    def targets(self) -> list[str]:
        """Target formulas."""
        ...

    def precursors(self) -> list[str]:
        """Available precursor formulas."""
        ...

    def thermo_entries(self) -> list[dict[str, Any]]:
        """Computed entries ``{"formula", "energy_per_atom"}`` (eV/atom)."""
        ...

    def react(self, target: str, precursors: str, temperature_c: float) -> dict[str, float]:
        """Noise-free product weight fractions of a recipe (sum to 1); raises a
        ``ValueError`` (``ParameterLimitError``) for a recipe the lab cannot dose."""
        ...


def space(t_min_c: float = 600.0, t_max_c: float = 1400.0) -> SearchSpace:
    """The campaign search space of ``examples/alab.toml``."""
    return SearchSpace(
        parameters=[
            StringParameter(name="target", pattern=r"[A-Za-z0-9]+"),
            StringParameter(name="precursors", pattern=r"[A-Za-z0-9]+(\+[A-Za-z0-9]+)*"),
            ContinuousParameter(name="temperature_c", lower=t_min_c, upper=t_max_c, unit="degC"),
        ]
    )


def measure(
    truth: Mapping[str, float],
    target: str,
    noise: float,
    detection: float,
    rng: np.random.Generator,
) -> dict[str, float]:
    """The measurements the diffractometer would report for true fractions ``truth``.

    Returns:
        ``target_yield`` and one ``wf_<Formula>`` per detected phase (noisy fractions).
    """
    names = sorted(truth)
    w = np.array([max(float(truth[k]), 0.0) for k in names])
    if noise > 0:
        w = np.clip(w + rng.normal(0.0, noise, size=len(w)) * (w > 0), 0.0, None)
    total = float(w.sum())
    w = w / total if total > 0 else w
    wf = {f"wf_{k}": float(v) for k, v in zip(names, w, strict=True) if v >= detection}
    return {OBJECTIVE: float(wf.get(f"wf_{target}", 0.0)), **wf}


@dataclass
class RunResult:
    """One strategy's campaign on one seed.

    Attributes:
        strategy: The planner strategy.
        seed: The seed.
        obtained: Targets whose best true yield reached the threshold.
        runs: Furnace runs used.
        failed: Recipes the lab could not dose (failed experiments, counted in ``runs``).
        given_up: Targets the planner gave up.
        finished: Whether the planner finished before the budget ran out.
        seconds: Time spent planning (``ask`` and ``tell``), in seconds.
        best_true_yield: Best true yield of each target.
    """

    strategy: str
    seed: int
    obtained: list[str]
    runs: int
    failed: int
    given_up: list[str]
    finished: bool
    seconds: float
    best_true_yield: dict[str, float] = field(default_factory=dict)


def run_campaign(
    world: World,
    strategy: str,
    seed: int,
    *,
    budget: int = 60,
    batch: int = 4,
    noise: float = 0.02,
    detection: float = 0.02,
    threshold: float = 0.5,
    t_range_c: tuple[float, float] = (600.0, 1400.0),
    options: Mapping[str, Any] | None = None,
) -> RunResult:
    """Run one strategy's campaign against ``world`` (see the module docstring)."""
    targets = list(world.targets())
    opts: dict[str, Any] = {
        "targets": targets,
        "precursors": list(world.precursors()),
        "thermo": list(world.thermo_entries()),
        "strategy": strategy,
        "yield_threshold": threshold,
    }
    opts.update(options or {})
    planner = make_planner(
        "alab",
        space(*t_range_c),
        [Objective(name=OBJECTIVE, direction="maximize", unit="fraction")],
        seed=seed,
        options=opts,
    )
    assert isinstance(planner, AlabPlanner)
    rng = np.random.default_rng([seed, 17])
    best = dict.fromkeys(targets, 0.0)
    runs, failed, seconds, finished = 0, 0, 0.0, False
    details: Mapping[str, Any] = {}
    while runs < budget:
        t0 = time.perf_counter()
        decision = planner.ask(min(batch, budget - runs))
        seconds += time.perf_counter() - t0
        details = decision.details
        if not decision.proposals:
            finished = "finished" in details
            break
        observations = []
        for prop in decision.proposals:
            p = prop.parameters
            target, precursors = str(p["target"]), str(p["precursors"])
            try:
                truth = world.react(target, precursors, float(p["temperature_c"]))
            except ValueError:  # the dosing station cannot balance it: the experiment fails
                observations.append(Observation(parameters=dict(p), objectives={}, feasible=False))
                failed += 1
                continue
            best[target] = max(best.get(target, 0.0), float(truth.get(target, 0.0)))
            values = measure(truth, target, noise, detection, rng)
            observations.append(
                Observation(
                    parameters=dict(p),
                    objectives={OBJECTIVE: values[OBJECTIVE]},
                    measurements=values,
                )
            )
        runs += len(observations)
        t0 = time.perf_counter()
        planner.tell(observations)
        seconds += time.perf_counter() - t0
    given_up = [t for t, st in details.get("targets", {}).items() if st.get("status") == "given_up"]
    return RunResult(
        strategy=strategy,
        seed=seed,
        obtained=sorted(t for t, y in best.items() if y >= threshold),
        runs=runs,
        failed=failed,
        given_up=sorted(given_up),
        finished=finished,
        seconds=seconds,
        best_true_yield=best,
    )


def run(
    world: World, seeds: Sequence[int], strategies: Sequence[str] = STRATEGIES, **kwargs: Any
) -> dict[str, list[RunResult]]:
    """Every strategy on every seed (keyword arguments go to :func:`run_campaign`)."""
    return {s: [run_campaign(world, s, seed, **kwargs) for seed in seeds] for s in strategies}


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    q25, q50, q75 = np.quantile(np.asarray(values, dtype=float), [0.25, 0.5, 0.75])
    return float(q50), float(q25), float(q75)


def table(results: Mapping[str, list[RunResult]], n_targets: int, budget: int) -> str:
    """The results as a plain-text table (median [IQR] over the seeds)."""
    lines = [
        f"{'strategy':<14}{'targets obtained':>22}{'furnace runs':>20}"
        f"{'given up':>12}{'plan s/run':>12}"
    ]
    for strategy, rows in results.items():
        got = _quartiles([len(r.obtained) for r in rows])
        used = _quartiles([r.runs for r in rows])
        gave = statistics.median(len(r.given_up) for r in rows)
        secs = statistics.median(r.seconds for r in rows)
        lines.append(
            f"{strategy:<14}"
            f"{f'{got[0]:g} [{got[1]:g}, {got[2]:g}] / {n_targets}':>22}"
            f"{f'{used[0]:g} [{used[1]:g}, {used[2]:g}]':>20}"
            f"{gave:>12g}{secs:>12.2f}"
        )
    n_seeds = len(next(iter(results.values()), []))
    lines.append(f"seeds: {n_seeds}; budget {budget} furnace runs; median [25 %, 75 %]")
    return "\n".join(lines)


def per_target(results: Mapping[str, list[RunResult]], targets: Sequence[str]) -> str:
    """How often each strategy obtained each target (over the seeds)."""
    head = f"{'target':<16}" + "".join(f"{s:>14}" for s in results)
    lines = [head]
    for t in targets:
        cells = "".join(
            f"{sum(t in r.obtained for r in rows)}/{len(rows)}".rjust(14)
            for rows in results.values()
        )
        lines.append(f"{t:<16}{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0..N-1)")
    parser.add_argument("--budget", type=int, default=60, help="furnace runs per campaign")
    parser.add_argument("--batch", type=int, default=4, help="recipes heated concurrently")
    parser.add_argument("--noise", type=float, default=0.02, help="weight-fraction noise std")
    parser.add_argument("--detection", type=float, default=0.02, help="smallest reported wf")
    parser.add_argument("--threshold", type=float, default=0.5, help="yield that counts")
    parser.add_argument("--cache-dir", default="examples/data/alab", help="the world's data")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--t-max", type=float, default=1100.0, help="hottest furnace setting, degC")
    args = parser.parse_args(argv)
    from sim.alab.world import AlabWorld  # the simulated world (imported only when run)

    world = AlabWorld.default(cache_dir=args.cache_dir)
    t0 = time.perf_counter()
    results = run(
        world,
        list(range(args.seeds)),
        args.strategies,
        budget=args.budget,
        batch=args.batch,
        noise=args.noise,
        detection=args.detection,
        threshold=args.threshold,
        t_range_c=(600.0, args.t_max),
    )
    targets = world.targets()
    print(table(results, len(targets), args.budget))
    print()
    print(per_target(results, targets))
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
