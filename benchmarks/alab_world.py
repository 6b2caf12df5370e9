"""Benchmark: the ``alab`` world's recipes, and XRD phase identification on its products.

Two tables:

* **Recipes.** For every target (and CaZrO3, on the hull but starved), every balanced recipe
  of one to three shelf precursors, the noise-free yield on a temperature grid: how many
  recipes reach 50 %, and the best yield with its temperature.
* **Phase identification.** For every balanced two-precursor recipe at each grid
  temperature, the ``alab-xrd`` station's pattern (noise-free, and with Poisson counting
  noise at ``peak_counts``) identified by :func:`instruments.xrd.identify_phases` with the
  recipe's candidate phases, scored against the world's true weight fractions: mean and
  largest absolute error of the target's weight fraction and of every candidate's, phases
  of at least 3 wt % missed, phases absent (below 0.5 wt %) reported, median Rwp. Baseline
  in the same run, on the same patterns: the same fit with the strains fixed at zero
  (``max_strain = 0``), which cannot follow the world's hidden +-0.5 % strains.

Usage::

    nice -n 10 .venv/bin/python -m benchmarks.alab_world --temperatures 800,1100,1400
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from instruments.xrd import identify_phases
from models.instrument_spec import SimulatedInstrumentSpec
from sim.alab.drivers import XRDDriver
from sim.alab.world import AlabWorld


def recipe_table(world: AlabWorld, temperatures: Sequence[float]) -> str:
    """The recipes table (see the module docstring)."""
    lines = ["target    recipes  >=50%  best yield (recipe, degC)"]
    for target in [*world.targets(), "CaZrO3"]:
        rows = []
        for p in world.recipes(target):
            ys = [world.react(target, p, t).get(target, 0.0) for t in temperatures]
            i = int(np.argmax(ys))
            rows.append((ys[i], p, temperatures[i]))
        good = sum(1 for y, _, _ in rows if y >= 0.5)
        y, p, t = max(rows)
        lines.append(f"{target:9s} {len(rows):7d} {good:6d}  {y:.2f} ({p}, {t:g})")
    return "\n".join(lines)


def _score(
    world: AlabWorld,
    target: str,
    precursors: str,
    temperature_c: float,
    fractions: dict[str, float],
    candidates: list[str],
) -> dict[str, Any]:
    truth = world.react(target, precursors, temperature_c)
    errs = [abs(truth.get(f, 0.0) - fractions.get(f, 0.0)) for f in candidates]
    return {
        "target": abs(truth.get(target, 0.0) - fractions.get(target, 0.0)),
        "errs": errs,
        "missed": sum(
            1 for f in candidates if truth.get(f, 0.0) >= 0.03 and fractions.get(f, 0.0) == 0.0
        ),
        "spurious": sum(
            1 for f in candidates if truth.get(f, 0.0) < 0.005 and fractions.get(f, 0.0) > 0.0
        ),
    }


def phase_id_table(
    world: AlabWorld, temperatures: Sequence[float], peak_counts: float, seed: int
) -> str:
    """The phase-identification table (see the module docstring)."""
    pairs = [(t, p) for t in [*world.targets(), "CaZrO3"] for p in world.recipes(t, sizes=(2,))]
    spec = SimulatedInstrumentSpec(
        driver="alab-xrd", world="alab", seed=seed, options={"peak_counts": peak_counts}
    )
    xrd = XRDDriver("xrd", spec, world=world)
    scores: dict[str, list[dict[str, Any]]] = {"strain refined": [], "rigid (baseline)": []}
    rwp: dict[str, list[float]] = {k: [] for k in scores}
    for target, precursors in pairs:
        candidates = xrd.candidates(target, precursors)
        refs = [xrd.reference(f) for f in candidates]
        for t in temperatures:
            y = xrd.measure(target, precursors, t)
            for name, max_strain in (("strain refined", 0.01), ("rigid (baseline)", 0.0)):
                fit = identify_phases(
                    xrd.grid, y, refs, fwhm_deg=xrd.own["fwhm_deg"], max_strain=max_strain
                )
                scores[name].append(
                    _score(world, target, precursors, t, fit.weight_fractions, candidates)
                )
                rwp[name].append(fit.rwp_percent)
    lines = [
        f"peak_counts {peak_counts:g}, {len(scores['strain refined'])} patterns",
        "fit                target |err| mean/max   all |err| mean/max   missed  spurious"
        "  Rwp median %",
    ]
    for name, rows in scores.items():
        te = [r["target"] for r in rows]
        ae = [e for r in rows for e in r["errs"]]
        lines.append(
            f"{name:18s} {statistics.mean(te):.4f}/{max(te):.4f}        "
            f"{statistics.mean(ae):.4f}/{max(ae):.4f}      {sum(r['missed'] for r in rows):6d}  "
            f"{sum(r['spurious'] for r in rows):8d}  {statistics.median(rwp[name]):.2f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print both tables."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--temperatures", default="800,1100,1400", help="degC, comma-separated")
    parser.add_argument("--peak-counts", type=float, default=10000.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    temperatures = [float(t) for t in args.temperatures.split(",")]
    world = AlabWorld.default()
    print(recipe_table(world, [600.0, 700.0, 800.0, 900.0, 1000.0, 1100.0, 1200.0, 1300.0, 1400.0]))
    print()
    for counts in (0.0, args.peak_counts):
        print(phase_id_table(world, temperatures, counts, args.seed))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
