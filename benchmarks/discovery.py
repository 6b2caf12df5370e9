"""Discovery benchmark: the cost of the CHGNet truth, and hits per 100 truth evaluations.

Part 1, truth-evaluation cost. For a handful of small structures of the system, the time of
one energy evaluation: CHGNet static (the world's default: a volume scan of
``len(DEFAULT_SCAN)`` single points), a brief relaxation (``--relax-steps`` FIRE steps), and
each again from the on-disk cache; the model's load time is printed on its own. Timings are
per structure, on whatever this machine gives (two shared cores here).

Part 2, the discovery loop (Merchant et al. 2023, GNoME's generate-screen-measure loop) on
the ``materials`` world of ``--elements`` with its hit threshold (``--threshold`` eV/atom
above hull). The discovery planner generates its candidates (charge-balanced compositions
in prototypes and data-mined substitutions, duplicates removed), then proposes batches of
``--batch`` until ``--budget`` truth evaluations are spent, with

* ``screened``: the discovery planner's default: a first batch of the candidates whose
  ions most probably replace their prototype's (data-mined substitution probabilities),
  then the GP screen and the probability of being a hit (``pstable``);
* ``screened, random start``: the same with a random first batch (the GP's own share);
* ``random``: random choice among the same generated candidates (the baseline),

each over ``--seeds`` seeds. Each measured value is the noise-free truth, reported with an
uncertainty of ``--noise`` (the property instrument's noise), as the lab would report it.
Printed: hits per 100 truth evaluations, median and quartiles over the seeds, and the
ratio of the medians.

Usage:  nice -n 10 python -m benchmarks.discovery [--seeds 10] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from models.materials import build_structure
from models.objectives import Objective
from models.params import SearchSpace, StringParameter
from models.records import Observation
from planners.base import make_planner
from sim.materials.energy import StructureEnergy
from sim.materials.world import MaterialsWorld

OBJECTIVE = "e_above_hull_ev_per_atom"

COST_MATERIALS = (
    "AB3C_cP5_221_a_c_b:Sr,O,Ti",
    "AB_cF8_225_a_b:O,Sr",
    "A2B_tP6_136_f_a:O,Ti",
    "AB2C4_tI14_139_a_e_ce:Ti,Sr,O",
    "AB3C_cP5_221_a_c_b:Ba,O,Ti",
)


def _timed(energy: StructureEnergy, materials: tuple[str, ...]) -> tuple[float, bool]:
    t = time.perf_counter()
    cached = [energy.energy(build_structure(m)).cached for m in materials]
    return (time.perf_counter() - t) / len(materials), all(cached)


def cost_table(relax_steps: int, console: Console) -> None:
    """Part 1: seconds per structure, static and relaxed: cold, cached in memory, and read
    from the disk cache by a new object (as another instrument process would)."""
    table = Table(title="Truth-evaluation cost per structure (CHGNet 0.3.0, CPU)")
    cols = ("evaluation", "cold s", "memory-cached s", "disk-cached s", "cold / disk")
    for col in cols:
        table.add_column(col, justify="right" if col != "evaluation" else "left")
    with tempfile.TemporaryDirectory() as tmp:
        static = StructureEnergy(mode="static", cache_dir=Path(tmp) / "s")
        t = time.perf_counter()
        model = static.model
        console.print(f"CHGNet model load: {time.perf_counter() - t:.2f} s (once per process)")
        static.energy(build_structure("AB_cF8_225_a_b:O,Mg"))  # warm-up
        for label, settings in (
            (f"static ({len(static.volume_scan)}-point volume scan)", {"mode": "static"}),
            (
                f"brief relaxation ({relax_steps} FIRE steps)",
                {"mode": "relax", "relax_steps": relax_steps},
            ),
        ):
            where = Path(tmp) / str(settings["mode"])
            energy = StructureEnergy(cache_dir=where, **settings)  # type: ignore[arg-type]
            energy._model = model  # share the loaded model
            cold, _ = _timed(energy, COST_MATERIALS)
            memory, hit = _timed(energy, COST_MATERIALS)
            disk, hit_disk = _timed(
                StructureEnergy(cache_dir=where, **settings),  # type: ignore[arg-type]
                COST_MATERIALS,
            )
            assert hit
            assert hit_disk
            table.add_row(
                label, f"{cold:.3f}", f"{memory:.5f}", f"{disk:.5f}", f"{cold / disk:.0f}x"
            )
    console.print(table)


def run_loop(
    world: MaterialsWorld,
    acquisition: str,
    initial_design: str,
    seed: int,
    args: argparse.Namespace,
) -> tuple[int, int]:
    """One campaign of ``args.budget`` truth evaluations; returns (hits, evaluations)."""
    space = SearchSpace(parameters=[StringParameter(name="material")])
    planner = make_planner(
        "discovery",
        space,
        [Objective(name=OBJECTIVE, direction="minimize")],
        seed=seed,
        options={
            "elements": args.elements,
            "min_elements": 3,
            "proposers": ["charge_balanced", "substitution"],
            "acquisition": acquisition,
            "initial_design": initial_design,
            "threshold": args.threshold,
            "initial_points": args.batch,
        },
    )
    hits = evaluations = 0
    while evaluations < args.budget:
        decision = planner.ask(min(args.batch, args.budget - evaluations))
        told = []
        for p in decision.proposals:
            truth = world.assess(p.parameters["material"])
            hits += truth.forms
            evaluations += 1
            told.append(
                Observation(
                    parameters=dict(p.parameters),
                    objectives={OBJECTIVE: truth.e_above_hull},
                    uncertainties={OBJECTIVE: args.noise},
                )
            )
        planner.tell(told)
    return hits, evaluations


def loop_table(args: argparse.Namespace, console: Console) -> None:
    """Part 2: hits per 100 truth evaluations, screened vs random."""
    world = MaterialsWorld(
        elements=args.elements, stable_threshold_ev=args.threshold, cache_dir=args.cache_dir
    )
    t = time.perf_counter()
    world.hull  # noqa: B018 - computed (or read from the cache) before the timings
    console.print(f"reference hull: {time.perf_counter() - t:.1f} s")
    arms = {
        "screened": ("pstable", "prior"),
        "screened, random start": ("pstable", "random"),
        "random": ("random", "random"),
    }
    rates: dict[str, list[float]] = {arm: [] for arm in arms}
    seconds: dict[str, float] = dict.fromkeys(arms, 0.0)
    for seed in range(args.seeds):
        for arm, (acq, start) in arms.items():
            t = time.perf_counter()
            hits, n = run_loop(world, acq, start, seed, args)
            seconds[arm] += time.perf_counter() - t
            rates[arm].append(100.0 * hits / n)
            console.print(f"seed {seed:2d} {arm:22s}: {hits} hits in {n} evaluations")
    planner = make_planner(
        "discovery",
        SearchSpace(parameters=[StringParameter(name="material")]),
        [Objective(name=OBJECTIVE, direction="minimize")],
        options={
            "elements": args.elements,
            "min_elements": 3,
            "proposers": ["charge_balanced", "substitution"],
        },
    )
    pool = planner.base_candidates()
    n_hit = sum(world.assess(c.material).forms for c in pool)
    table = Table(
        title=(
            f"Hits (E_hull < {args.threshold} eV/atom) per 100 truth evaluations, "
            f"{'-'.join(args.elements)}, budget {args.budget}, {args.seeds} seeds; "
            f"{n_hit} hits among {len(pool)} generated candidates "
            f"(random expectation {100.0 * n_hit / len(pool):.1f})"
        )
    )
    for col in ("arm", "median", "25%", "75%", "planner s/run"):
        table.add_column(col, justify="right")
    for arm, r in rates.items():
        q = statistics.quantiles(r, n=4) if len(r) > 1 else [r[0]] * 3
        table.add_row(
            arm,
            f"{statistics.median(r):.1f}",
            f"{q[0]:.1f}",
            f"{q[2]:.1f}",
            f"{seconds[arm] / args.seeds:.1f}",
        )
    console.print(table)
    base = statistics.median(rates["random"])
    ratio = statistics.median(rates["screened"]) / base if base > 0 else float("inf")
    console.print(f"screened / random (medians): {ratio:.2f}x")
    start = statistics.median(rates["screened, random start"]) / base if base > 0 else 0.0
    console.print(f"screened with a random start / random (medians): {start:.2f}x")


def main() -> None:
    """Parse the arguments and print both tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", nargs="+", default=["Ba", "Sr", "Ti", "O"])
    parser.add_argument("--threshold", type=float, default=0.025)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=30)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--relax-steps", type=int, default=20)
    parser.add_argument("--cache-dir", default=".cache/discovery")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-loop", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    console = Console()
    if not args.skip_cost:
        cost_table(args.relax_steps, console)
    if not args.skip_loop:
        loop_table(args, console)


if __name__ == "__main__":
    main()
