"""Planners measured as a campaign runs them: asynchronously, with pending experiments.

The in-process planner benchmark (:mod:`benchmarks.planner_bench`) asks sequentially and
tells noise-free values. A campaign does neither: ``examples/hartmann6.toml`` runs on two
stations, so every ask after the first has the other station's experiment pending, and
each measurement carries the stations' noise (std 0.01, reported as its uncertainty, so the
BO planner fits a fixed-noise GP). This benchmark drives the campaign file's own planner
(built by :func:`controller.planning.build_planner`, as the controller builds it) exactly
that way, in virtual time, without Ray or sockets: each free station asks for one
experiment with every running one pending; the stations take equally long, so they finish
in turn; a finished experiment is told with its noisy value and uncertainty. In the same
run, on the same seeds, it also drives the planner sequentially and noise-free, as the
in-process benchmark does, so the gap between the two is measured, not quoted::

    python -m benchmarks.async_planners                      # seeds 1, 2, 3; N = 35
    python -m benchmarks.async_planners --seeds 1-10 --budget 35 --stations 2
    python -m benchmarks.async_planners --infer-noise        # noise not told: inferred
    python -m benchmarks.async_planners --option gp_priors='"botorch"'  # override an option

Scores are noise-free: the best true value among the points run (and, beside it, the best
*measured* value, which is what ``sdlab run``'s summary prints).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: put the repository root first
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from controller.planning import build_planner
from models.campaign import CampaignSpec
from models.campaign_file import load_campaign
from models.records import Observation
from sim.worlds import get_world

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CAMPAIGN = REPO / "examples" / "hartmann6.toml"


@dataclass
class Run:
    """One campaign run in virtual time.

    Attributes:
        mode: ``"async"`` (stations, pending, noise) or ``"sequential"`` (noise-free).
        seed: The campaign seed.
        best_true: Best noise-free value among the points run.
        best_measured: Best measured value (what the run summary prints).
        pending_per_ask: Mean number of pending experiments per ask.
        seconds: Planner seconds over the run.
    """

    mode: str
    seed: int
    best_true: float
    best_measured: float
    pending_per_ask: float
    seconds: float


def run_campaign(
    spec: CampaignSpec,
    seed: int,
    budget: int,
    *,
    stations: int,
    noisy: bool,
    report_uncertainty: bool = True,
) -> Run:
    """Drive ``spec``'s planner to ``budget`` experiments.

    Args:
        spec: The campaign (its planner, space, objective and simulated stations).
        seed: The campaign seed (``sdlab run --seed``).
        budget: Experiments to run.
        stations: Stations working at once (1: sequential).
        noisy: Add each station's noise (its ``noise_std``).
        report_uncertainty: Tell the noise std as each value's uncertainty, as the
            simulated stations report it (``False``: the planner infers the noise).
    """
    sims = [i.simulator for i in spec.instruments if i.simulator is not None]
    if not sims:
        raise ValueError("the campaign has no simulated instrument")
    world = get_world(sims[0].world, **sims[0].options)
    objective = next(o for o in spec.objectives if not o.is_constraint).name
    planner = build_planner(spec, seed)
    noise_std = [float(s.noise_std) if noisy else 0.0 for s in sims]
    rngs = [np.random.default_rng([seed, int(s.seed or k)]) for k, s in enumerate(sims)]
    running: list[tuple[int, dict[str, Any]]] = []  # (station, point), in launch order
    launched, told = 0, 0
    best_true, best_measured = -np.inf, -np.inf
    pending_counts: list[int] = []
    seconds = 0.0
    free = list(range(stations))
    while told < budget:
        while free and launched < budget:
            station = free.pop(0)
            pending = [p for _, p in running]
            pending_counts.append(len(pending))
            decision = planner.ask(1, pending)
            seconds += decision.seconds
            point = dict(decision.proposals[0].parameters)
            running.append((station, point))
            launched += 1
        station, point = running.pop(0)  # equal durations: the oldest finishes first
        k = station % len(sims)
        true = float(world.evaluate_true(point)[objective])
        value = true + (float(rngs[k].normal()) * noise_std[k] if noise_std[k] > 0 else 0.0)
        unc = {objective: noise_std[k]} if noise_std[k] > 0 and report_uncertainty else {}
        planner.tell(
            [Observation(parameters=point, objectives={objective: value}, uncertainties=unc)]
        )
        told += 1
        best_true, best_measured = max(best_true, true), max(best_measured, value)
        free.append(station)
    return Run(
        mode="async" if stations > 1 or noisy else "sequential",
        seed=seed,
        best_true=best_true,
        best_measured=best_measured,
        pending_per_ask=float(np.mean(pending_counts)),
        seconds=seconds,
    )


def table(runs: Sequence[Run], budget: int, label: str) -> str:
    """A markdown table: per mode, the per-seed and median best values."""
    lines = [
        f"| {label} | seeds | best (true) per seed | median best (true) | median best "
        "(measured) | pending per ask | planner s |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in ("async", "sequential"):
        rs = [r for r in runs if r.mode == mode]
        if not rs:
            continue
        lines.append(
            f"| {mode} | {', '.join(str(r.seed) for r in rs)} | "
            f"{', '.join(f'{r.best_true:.3f}' for r in rs)} | "
            f"{statistics.median(r.best_true for r in rs):.3f} | "
            f"{statistics.median(r.best_measured for r in rs):.3f} | "
            f"{statistics.mean(r.pending_per_ask for r in rs):.2f} | "
            f"{sum(r.seconds for r in rs):.0f} |"
        )
    return "\n".join(lines) + f"\n\nN = {budget} experiments per run.\n"


def parse_seeds(text: str) -> list[int]:
    """``"1,2,3"`` or ``"1-5"``."""
    if "-" in text:
        lo, hi = (int(t) for t in text.split("-", 1))
        return list(range(lo, hi + 1))
    return [int(t) for t in text.split(",") if t.strip()]


def with_options(spec: CampaignSpec, overrides: Sequence[str]) -> CampaignSpec:
    """``spec`` with planner options replaced: each override is ``KEY=VALUE``, ``VALUE``
    JSON (``8``, ``true``, ``"gamma"``) or else a plain string.

    Raises:
        ValueError: If an override has no ``=``.
        InvalidCampaignError: If the resulting options are invalid for the planner (when
            the planner is built).
    """
    options = dict(spec.planner.options)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option: expected KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = json.loads(raw)
        except ValueError:
            options[key.strip()] = raw
    data = spec.model_dump()
    data["planner"] = {**data["planner"], "options": options}
    return type(spec).model_validate(data)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--campaign", type=Path, default=DEFAULT_CAMPAIGN)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--budget", type=int, default=35)
    parser.add_argument("--stations", type=int, default=None, help="default: the file's")
    parser.add_argument("--no-sequential", action="store_true")
    parser.add_argument(
        "--infer-noise",
        action="store_true",
        help="do not tell the stations' noise std as uncertainty (the planner infers it)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a [planner.options] key of the campaign file (VALUE in JSON); repeatable",
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    try:
        spec = with_options(load_campaign(args.campaign), args.option)
    except ValueError as exc:
        parser.error(str(exc))
    stations = args.stations or sum(i.simulator is not None for i in spec.instruments)
    runs: list[Run] = []
    for seed in parse_seeds(args.seeds):
        modes = [(stations, True)] + ([] if args.no_sequential else [(1, False)])
        for n_st, noisy in modes:
            t0 = time.perf_counter()
            r = run_campaign(
                spec,
                seed,
                args.budget,
                stations=n_st,
                noisy=noisy,
                report_uncertainty=not args.infer_noise,
            )
            runs.append(r)
            print(
                f"{time.strftime('%H:%M:%S')} seed {seed} {r.mode}: best {r.best_true:.3f} "
                f"(measured {r.best_measured:.3f}) in {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
    label = f"{spec.campaign.name} ({spec.planner.name}"
    label += f" {', '.join(args.option)})" if args.option else ")"
    print(table(runs, args.budget, label))
    return 0


if __name__ == "__main__":
    sys.exit(main())
