"""Seconds per Bayesian-optimisation suggestion, and its quality, as the data grows.

Problem: maximise the negated Hartmann6 function (6-D, optimum 3.32237) with observation
noise of standard deviation 0.02. The state of ``n`` observations is a scrambled Sobol
design plus 5 % of points near the optimum (Gaussian, standard deviation 0.1 per
coordinate), so the incumbent region is realistic. From that state each method makes
``iterations`` suggestions of ``q = 4`` points, each batch measured (noisily) and told
before the next, and the regret is scored against the noise-free truth:

* ``regret_q``: optimum minus the true value of the best of the first batch;
* ``regret_run``: optimum minus the best true value among every point the method proposed
  in its continued run.

Methods, measured in the same run on the same states:

* ``sdlab``: :class:`planners.bo.QLogNEIPlanner` with its defaults (or ``--planner-options``);
  seconds are those of a planner in a running campaign: with ``warm_start`` the first
  suggestion also fits the warm-start anchor (a cold fit, repeated every ``refit_every``
  observations), reported apart as ``anchor_s``; ``fit_s``, ``acq_s`` and ``total_s`` are
  medians over the suggestions without it, ``cpu_s`` the median CPU seconds of the process
  per suggestion, and ``amortised_s`` adds the anchor's share (``anchor_s`` divided by the
  suggestions of 4 points per refit interval); ``mean_s`` is the mean wall seconds of
  every suggestion of the run, anchor fits included;
* ``sdlab-v3``: the planner's defaults (no warm start: a cold GP fit at every
  suggestion, as in its version 3), beside ``sdlab`` with ``warm_start = true``;
* ``sdlab-v2``: the same planner with the defaults of its version 2 (8 restarts, 256
  raw samples, 200 iterations, sequential greedy, every observation in the baseline, a
  local GP of 1000 points above 1000 observations): the
  "before" of this change;
* ``botorch``: BoTorch defaults as in its tutorials: ``SingleTaskGP`` fitted cold with
  ``fit_gpytorch_mll`` each time, qLogNEI with every observation as ``X_baseline``,
  ``optimize_acqf(q=4, num_restarts=10, raw_samples=512, sequential=True)``. Skipped above
  ``--botorch-max-n`` (default 500: an exact GP on 2000 points takes minutes per fit on two
  shared cores, on 10 000 far longer), to keep the whole run near 15 minutes.

On a machine shared with other jobs wall-clock seconds swing with the load; ``cpu_s`` (the
process's CPU seconds, with ``--threads 1`` close to the seconds on one idle core) is the
steadier column to compare.

Usage:  python -m benchmarks.planner_speed [--sizes 100 500 2000 10000] [--seeds 2]
        [--iterations 2] [--threads 1] [--planner-options '{"warm_start": true}']
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.optim import optimize_acqf
from botorch.test_functions import Hartmann
from gpytorch.mlls import ExactMarginalLogLikelihood
from rich.console import Console
from rich.table import Table
from torch import Tensor

from models.objectives import Objective
from models.params import ContinuousParameter, SearchSpace
from models.records import Observation
from planners.bo import QLogNEIPlanner
from planners.bo_speed import refit_interval

HARTMANN = Hartmann(dim=6)
OPTIMUM = 3.32237
NOISE_SD = 0.02
Q = 4
NAMES = [f"x{i + 1}" for i in range(6)]
SPACE = SearchSpace(parameters=[ContinuousParameter(name=n, lower=0.0, upper=1.0) for n in NAMES])
OBJECTIVES = [Objective(name="y", direction="maximize")]
V2_OPTIONS: dict[str, Any] = {
    "warm_start": False,
    "num_restarts": 8,
    "raw_samples": 256,
    "maxiter": 200,
    "max_baseline": None,
    "sequential": True,
    "max_exact": 1000,
}
"""Options reproducing the defaults of planner version 2 (before this benchmark's change)."""
V3_OPTIONS: dict[str, Any] = {"warm_start": False}
"""Options reproducing the defaults of planner version 3 (a cold GP fit at every ask)."""


def truth(x: Tensor) -> Tensor:
    """Noise-free negated Hartmann6 at ``n x 6`` points (larger is better)."""
    return -HARTMANN.evaluate_true(x.to(torch.double))


def measure(x: Tensor, gen: torch.Generator) -> Tensor:
    """Noisy observations ``n x 1`` at ``n x 6`` points."""
    return (truth(x) + NOISE_SD * torch.randn(x.shape[0], generator=gen, dtype=torch.double))[
        :, None
    ]


def initial_state(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` observed points (Sobol plus 5 % near the optimum) and their noisy values."""
    n_near = n // 20
    sobol = torch.quasirandom.SobolEngine(6, scramble=True, seed=seed)
    x = sobol.draw(n - n_near, dtype=torch.double)
    gen = torch.Generator().manual_seed(seed)
    best = torch.tensor(HARTMANN.optimizers[0], dtype=torch.double)
    near = (best + 0.1 * torch.randn(n_near, 6, generator=gen, dtype=torch.double)).clamp(0, 1)
    x = torch.cat([x, near])
    return x, measure(x, gen)


def _observations(x: Tensor, y: Tensor) -> list[Observation]:
    return [
        Observation(parameters=dict(zip(NAMES, row, strict=True)), objectives={"y": v})
        for row, v in zip(x.tolist(), y[:, 0].tolist(), strict=True)
    ]


def planner_run(options: Mapping[str, Any]) -> Callable[[Tensor, Tensor, int, int], list[Any]]:
    """A continued run of our planner with ``options``; returns per-ask records."""

    def go(x: Tensor, y: Tensor, seed: int, iterations: int) -> list[Any]:
        planner = QLogNEIPlanner(SPACE, OBJECTIVES, seed=seed, **options)
        planner.tell(_observations(x, y))
        gen = torch.Generator().manual_seed(10_000 + seed)
        out = []
        for _ in range(iterations):
            c0 = time.process_time()
            decision = planner.ask(Q)
            cpu = time.process_time() - c0
            pts = torch.tensor(
                [[float(p.parameters[k]) for k in NAMES] for p in decision.proposals],
                dtype=torch.double,
            )
            d = decision.details
            out.append(
                (
                    pts,
                    {
                        "fit_s": d["seconds_fit"] - d.get("seconds_anchor_fit", 0.0),
                        "anchor_s": d.get("seconds_anchor_fit", 0.0),
                        "acq_s": d["seconds_acq"],
                        "total_s": decision.seconds - d.get("seconds_anchor_fit", 0.0),
                        "wall_s": decision.seconds,
                        "cpu_s": cpu,
                    },
                )
            )
            planner.tell(_observations(pts, measure(pts, gen)))
        return out

    return go


def botorch_run(x: Tensor, y: Tensor, seed: int, iterations: int) -> list[Any]:
    """A continued run with BoTorch's tutorial defaults (cold fit every time)."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    bounds = torch.stack([torch.zeros(6), torch.ones(6)]).double()
    out = []
    for i in range(iterations):
        torch.manual_seed(seed * 1000 + i)
        c0 = time.process_time()
        t0 = time.perf_counter()
        model = SingleTaskGP(x, y)
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        t1 = time.perf_counter()
        acqf = qLogNoisyExpectedImprovement(model, X_baseline=x, prune_baseline=True)
        pts, _ = optimize_acqf(acqf, bounds, q=Q, num_restarts=10, raw_samples=512, sequential=True)
        t2 = time.perf_counter()
        pts = pts.detach()
        timings = {"fit_s": t1 - t0, "anchor_s": 0.0, "acq_s": t2 - t1, "total_s": t2 - t0}
        timings["wall_s"] = t2 - t0
        timings["cpu_s"] = time.process_time() - c0
        out.append((pts, timings))
        x, y = torch.cat([x, pts]), torch.cat([y, measure(pts, gen)])
    return out


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def run(
    sizes: Sequence[int] = (100, 500, 2000, 10000),
    seeds: Sequence[int] = (0, 1),
    *,
    iterations: int = 2,
    planner_options: Mapping[str, Any] | None = None,
    botorch_max_n: int = 500,
    v2_max_n: int = 10_000,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Time and score suggestions of each method at each size.

    Args:
        sizes: Numbers of observations ``n`` in the starting state.
        seeds: Seeds of the states (and of the planners); one continued run each.
        iterations: Suggestions of ``q = 4`` points per continued run.
        planner_options: Options of the ``sdlab`` planner (``warm_start = true`` and its
            defaults when ``None``).
        botorch_max_n: Largest ``n`` at which the BoTorch baseline runs.
        v2_max_n: Largest ``n`` at which the version-2 options run.
        progress: Print each row to stderr (JSON) as soon as it is measured.

    Returns:
        One row per (size, method): ``n``, ``method``, ``fit_s``, ``acq_s``, ``total_s``
        (medians over the suggestions of every seed, without anchor fits), ``anchor_s``
        (median anchor fit), ``amortised_s``, ``mean_s`` (mean seconds of every
        suggestion, anchor fits included),
        ``regret_q`` and ``regret_run`` (medians over seeds), ``seeds``, ``suggestions``.
    """
    ours = {"warm_start": True, **(planner_options or {})}
    methods: list[tuple[str, Callable[[Tensor, Tensor, int, int], list[Any]], int]] = [
        ("sdlab", planner_run(ours), 10**9),
        ("sdlab-v3", planner_run(V3_OPTIONS), 10**9),
        ("sdlab-v2", planner_run(V2_OPTIONS), v2_max_n),
        ("botorch", botorch_run, botorch_max_n),
    ]
    rows: list[dict[str, Any]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n in sizes:
            states = {s: initial_state(n, s) for s in seeds}
            for name, go, max_n in methods:
                if n > max_n:
                    continue
                times: dict[str, list[float]] = {
                    k: [] for k in ("fit_s", "acq_s", "total_s", "cpu_s")
                }
                anchors: list[float] = []
                walls: list[float] = []
                regret_q: list[float] = []
                regret_run: list[float] = []
                for s in seeds:
                    records = go(*states[s], s, iterations)
                    for _, t in records:
                        walls.append(t["wall_s"])
                        if t["anchor_s"] > 0:
                            anchors.append(t["anchor_s"])
                        for k in times:
                            times[k].append(t[k])
                    regret_q.append(OPTIMUM - float(truth(records[0][0]).max()))
                    every = torch.cat([p for p, _ in records])
                    regret_run.append(OPTIMUM - float(truth(every).max()))
                row: dict[str, Any] = {"n": n, "method": name}
                row.update({k: _median(v) for k, v in times.items()})
                row["anchor_s"] = _median(anchors) if anchors else 0.0
                # the anchor is refitted once per refit interval of observations
                per = max(1, refit_interval(n, ours.get("refit_every")) // Q)
                row["amortised_s"] = row["total_s"] + (row["anchor_s"] / per)
                row["mean_s"] = statistics.fmean(walls)
                row["regret_q"] = _median(regret_q)
                row["regret_run"] = _median(regret_run)
                row["seeds"] = len(seeds)
                row["suggestions"] = len(times["total_s"])
                rows.append(row)
                if progress:
                    print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 2000, 10000])
    ap.add_argument("--seeds", type=int, default=2, help="number of seeds (0, 1, ...)")
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--planner-options", default="{}", help="JSON options of 'sdlab'")
    ap.add_argument("--botorch-max-n", type=int, default=500)
    ap.add_argument("--v2-max-n", type=int, default=10_000)
    ap.add_argument("--json", action="store_true", help="also print the rows as JSON")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = run(
        args.sizes,
        range(args.seeds),
        iterations=args.iterations,
        planner_options=json.loads(args.planner_options),
        botorch_max_n=args.botorch_max_n,
        v2_max_n=args.v2_max_n,
        progress=True,
    )
    table = Table(
        title=f"Seconds per suggestion (q = {Q}), Hartmann6, {torch.get_num_threads()} threads"
    )
    cols = ["n", "method", "fit_s", "acq_s", "total_s", "cpu_s", "anchor_s", "amortised_s"]
    cols += ["mean_s"]
    cols += ["regret_q", "regret_run", "suggestions"]
    for c in cols:
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(*(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    console = Console()
    console.print(table)
    for name, top in (("BoTorch defaults", args.botorch_max_n), ("sdlab-v2", args.v2_max_n)):
        skipped = [n for n in args.sizes if n > top]
        if skipped:
            console.print(f"{name} skipped at n = {skipped} (too slow for this run).")
    console.print(f"benchmark wall time {time.perf_counter() - t0:.0f} s")
    if args.json:
        console.print_json(json.dumps(rows))


if __name__ == "__main__":
    main()
