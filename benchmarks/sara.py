"""Benchmark: SARA's phase map against random and grid stripes on the ``sara-anneal`` world.

In-process (planner ``ask``/``tell`` on the world's truth plus Gaussian spectrum noise, no
controller). After every ``inner_budget`` measurements each strategy's measurements are
turned into a phase map over (local temperature, dwell) with the same rule
(:func:`planners.sara_map.infer_phase_map`) and scored against the world's true map
(:func:`planners.sara_map.map_accuracy`). Strategies, all with ``inner_budget`` positions
per stripe:

* ``sara``: the SARA planner (:mod:`planners.sara`), default options;
* ``random``: stripes with uniform ``tpeak`` and log-uniform dwell, uniform positions over
  the part of the stripe hotter than 400 degC (the lowest temperature the map is scored on;
  SARA gets the same as ``min_temperature_c``);
* ``grid``: stripes at the highest ``tpeak`` (they reach every lower temperature) and dwells
  evenly spaced in log, positions at evenly spaced local temperatures from 400 degC to
  ``tpeak`` (a strong baseline that knows how the map is scored).

Usage::

    nice -n 10 python -m benchmarks.sara --seeds 20 --n 60 --out /tmp/sara-bench
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.objectives import Objective
from models.params import ContinuousParameter, SearchSpace
from models.records import Observation
from planners.sara import SaraPlanner
from planners.sara_map import GaussianProfile, evaluation_grid, infer_phase_map, map_accuracy
from sim.sara import BANDS, DWELL_RANGE_US, POSITION_RANGE_MM, TPEAK_RANGE_C, SaraWorld

STRATEGIES = ("sara", "random", "grid")
EVAL_T_RANGE_C = (400.0, 1400.0)


def space() -> SearchSpace:
    """The campaign search space of ``examples/sara.toml``."""
    return SearchSpace(
        parameters=[
            ContinuousParameter(name="tpeak_c", lower=TPEAK_RANGE_C[0], upper=TPEAK_RANGE_C[1]),
            ContinuousParameter(name="dwell_us", lower=DWELL_RANGE_US[0], upper=DWELL_RANGE_US[1]),
            ContinuousParameter(
                name="position_mm", lower=POSITION_RANGE_MM[0], upper=POSITION_RANGE_MM[1]
            ),
        ]
    )


def objectives() -> list[Objective]:
    """One (unused-direction) objective per band descriptor."""
    return [Objective(name=name, direction="maximize") for name, _, _ in BANDS]


class Scorer:
    """Scores measurements ``(tpeak, dwell, position, descriptors)`` against the true map."""

    def __init__(self, world: SaraWorld, threshold: float = 0.05) -> None:
        self.world = world
        self.profile = GaussianProfile(world.ambient_c, world.width_mm, world.width_log_dwell_slope)
        self.grid_t, self.grid_ld = evaluation_grid(EVAL_T_RANGE_C, DWELL_RANGE_US, 50, 25)
        self.truth = world.phase(self.grid_t, 10**self.grid_ld)
        self.threshold = threshold

    def accuracy(self, rows: np.ndarray, values: np.ndarray) -> float:
        """Map accuracy of measurements ``rows`` (``n x 3``) with descriptors ``n x m``."""
        t = self.profile.temperature(rows[:, 0], rows[:, 1], rows[:, 2])
        pred = infer_phase_map(
            t,
            np.log10(rows[:, 1]),
            values,
            self.grid_t,
            self.grid_ld,
            threshold=self.threshold,
            t_range_c=(self.world.ambient_c, TPEAK_RANGE_C[1]),
            log_dwell_range=(math.log10(DWELL_RANGE_US[0]), math.log10(DWELL_RANGE_US[1])),
        )
        return map_accuracy(pred, self.truth)


def measure(
    world: SaraWorld, rows: np.ndarray, noise_std: float, rng: np.random.Generator
) -> np.ndarray:
    """Descriptors of noisy spectra at ``rows`` (``n x 3``: tpeak, dwell, position)."""
    out = []
    for tp, dw, x in rows:
        s = world.spectrum_true({"tpeak_c": tp, "dwell_us": dw, "position_mm": x})
        if noise_std > 0:
            s = s + noise_std * rng.standard_normal(s.size)
        out.append(list(world.descriptors(s).values()))
    return np.asarray(out)


def run_sara(
    world: SaraWorld, seed: int, n_max: int, noise_std: float, **options: Any
) -> tuple[np.ndarray, np.ndarray, SaraPlanner]:
    """Run the SARA planner for ``n_max`` measurements (one at a time)."""
    opts: dict[str, Any] = {"min_temperature_c": EVAL_T_RANGE_C[0], **options}
    planner = SaraPlanner(space(), objectives(), seed=seed, **opts)
    rng = np.random.default_rng(seed + 1_000_003)
    rows, values = [], []
    for _ in range(n_max):
        (prop,) = planner.ask(1).proposals
        p = prop.parameters
        row = np.array([[float(p["tpeak_c"]), float(p["dwell_us"]), float(p["position_mm"])]])  # type: ignore[arg-type]
        y = measure(world, row, noise_std, rng)[0]
        planner.tell(
            [
                Observation(
                    p, {n: float(v) for n, v in zip(planner.descriptor_names, y, strict=True)}
                )
            ]
        )
        rows.append(row[0])
        values.append(y)
    return np.asarray(rows), np.asarray(values), planner


def _hot_edge(profile: GaussianProfile, tpeak: float, dwell: float) -> float:
    """Distance from the centre line at which a stripe cools to the evaluation's lowest
    temperature (the whole half-stripe if it never gets that hot)."""
    x = float(profile.position(tpeak, dwell, EVAL_T_RANGE_C[0]))
    return min(x, POSITION_RANGE_MM[1]) if tpeak > EVAL_T_RANGE_C[0] else POSITION_RANGE_MM[1]


def random_rows(seed: int, n_max: int, per_stripe: int, profile: GaussianProfile) -> np.ndarray:
    """Random stripes (uniform tpeak, log-uniform dwell), positions uniform over the part
    of the stripe hotter than the evaluation's lowest temperature (either side)."""
    rng = np.random.default_rng(seed)
    n_stripes = math.ceil(n_max / per_stripe)
    tp = rng.uniform(*TPEAK_RANGE_C, n_stripes)
    dw = 10 ** rng.uniform(math.log10(DWELL_RANGE_US[0]), math.log10(DWELL_RANGE_US[1]), n_stripes)
    rows = []
    for i in range(n_stripes):
        edge = _hot_edge(profile, tp[i], dw[i])
        rows += [[tp[i], dw[i], rng.uniform(-edge, edge)] for _ in range(per_stripe)]
    return np.asarray(rows[:n_max])


def grid_rows(n_max: int, per_stripe: int, profile: GaussianProfile) -> np.ndarray:
    """Full-temperature stripes (highest tpeak) at evenly spaced log dwells, positions at
    evenly spaced local temperatures from the evaluation's lowest to tpeak."""
    n_stripes = math.ceil(n_max / per_stripe)
    ld = np.linspace(math.log10(DWELL_RANGE_US[0]), math.log10(DWELL_RANGE_US[1]), n_stripes)
    tp = TPEAK_RANGE_C[1]
    temps = np.linspace(EVAL_T_RANGE_C[0], tp, per_stripe)
    rows = [[tp, 10**d, float(x)] for d in ld for x in profile.position(tp, 10**d, temps)]
    return np.asarray(rows[:n_max])


def run(seeds: list[int], n_max: int, noise_std: float = 0.01) -> dict[str, Any]:
    """Map accuracy of each strategy after every stripe's worth of measurements.

    Args:
        seeds: Seeds (one run of each strategy per seed).
        n_max: Measurements per run.
        noise_std: Spectrum noise std (reflectance units, per wavelength).

    Returns:
        ``{"checkpoints": [n...], "accuracy": {strategy: seeds x checkpoints},
        "median", "q25", "q75": {strategy: [per checkpoint]}, "seconds": {strategy: total}}``.
    """
    world = SaraWorld()
    scorer = Scorer(world)
    per = SaraPlanner.Options().inner_budget
    checkpoints = list(range(per, n_max + 1, per)) or [n_max]
    acc: dict[str, list[list[float]]] = {s: [] for s in STRATEGIES}
    seconds = dict.fromkeys(STRATEGIES, 0.0)
    for seed in seeds:
        t0 = time.perf_counter()
        rows, values, _ = run_sara(world, seed, n_max, noise_std)
        seconds["sara"] += time.perf_counter() - t0
        runs = {"sara": (rows, values)}
        rng = np.random.default_rng(seed + 7)
        for name, r in (
            ("random", random_rows(seed, n_max, per, scorer.profile)),
            ("grid", grid_rows(n_max, per, scorer.profile)),
        ):
            t0 = time.perf_counter()
            runs[name] = (r, measure(world, r, noise_std, rng))
            seconds[name] += time.perf_counter() - t0
        for name, (r, v) in runs.items():
            acc[name].append([scorer.accuracy(r[:c], v[:c]) for c in checkpoints])
    arr = {k: np.asarray(v) for k, v in acc.items()}
    return {
        "checkpoints": checkpoints,
        "accuracy": {k: v.tolist() for k, v in arr.items()},
        "median": {k: np.median(v, axis=0).tolist() for k, v in arr.items()},
        "q25": {k: np.quantile(v, 0.25, axis=0).tolist() for k, v in arr.items()},
        "q75": {k: np.quantile(v, 0.75, axis=0).tolist() for k, v in arr.items()},
        "seconds": seconds,
        "n_seeds": len(seeds),
        "noise_std": noise_std,
    }


def table(result: dict[str, Any]) -> str:
    """The result as a plain-text table: median [IQR] map accuracy per checkpoint."""
    head = f"{'n':>5} " + " ".join(f"{s:>22}" for s in STRATEGIES)
    lines = [head]
    for i, c in enumerate(result["checkpoints"]):
        cells = [
            f"{result['median'][s][i]:.3f} [{result['q25'][s][i]:.3f}, {result['q75'][s][i]:.3f}]"
            for s in STRATEGIES
        ]
        lines.append(f"{c:>5} " + " ".join(f"{x:>22}" for x in cells))
    secs = ", ".join(f"{s} {result['seconds'][s]:.1f} s" for s in STRATEGIES)
    lines.append(
        f"seeds: {result['n_seeds']}, noise std {result['noise_std']:g}; total time: {secs}"
    )
    return "\n".join(lines)


def plot(result: dict[str, Any], out_dir: Path) -> Path:
    """Save map accuracy vs measurements (median and IQR band) as ``sara.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = result["checkpoints"]
    for s in STRATEGIES:
        ax.plot(x, result["median"][s], marker="o", label=s)
        ax.fill_between(x, result["q25"][s], result["q75"][s], alpha=0.2)
    ax.set_xlabel("measurements")
    ax.set_ylabel("phase-map accuracy")
    ax.set_title(f"sara-anneal, {result['n_seeds']} seeds (median, IQR)")
    ax.legend()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "sara.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--seeds N --n N_MAX [--noise STD] [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="number of seeds (0..N-1)")
    parser.add_argument("--n", type=int, default=60, help="measurements per run")
    parser.add_argument("--noise", type=float, default=0.01, help="spectrum noise std")
    parser.add_argument("--out", type=Path, default=None, help="directory for sara.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny GPs: threads only add overhead on a shared machine
    result = run(list(range(args.seeds)), args.n, args.noise)
    print(table(result))
    if args.out is not None:
        print(f"plot: {plot(result, args.out)}")


if __name__ == "__main__":
    main()
