"""The planner benchmark: every planner on the same problems, seeds and initial design.

One command runs the planners in-process (``ask``/``tell`` against each problem's
noise-free truth, no controller), caches every (problem, planner, seed) run as JSON, scores
the runs and writes a markdown table per problem plus best-so-far curves (PNG) into
``docs/benchmarks.md`` and ``docs/figures/``::

    python -m benchmarks.planner_bench                       # everything, 20 seeds, resumable
    python -m benchmarks.planner_bench --problems suzuki,branin --seeds 0-4
    python -m benchmarks.planner_bench --no-run              # only re-score the cache
    python -m benchmarks.planner_bench --quick               # a smoke run (3 seeds, short)

Problems (see :mod:`benchmarks.bench_problems`): the pools ``suzuki``, ``benzylation``,
``snar``, ``colors_n9`` and ``photo_wf3`` (Olympus data sets, files of the ``olymp`` wheel),
``branin``, ``branin-currin``, ``hartmann6``, ``hartmann6-noisy``,
``hartmann6-failures``; and through adapters, when the modules are present,
``phase-map`` (:mod:`benchmarks.active_learning`), ``sara`` (:mod:`benchmarks.sara`),
``speed`` (:mod:`benchmarks.planner_speed`) and ``mf`` (:mod:`benchmarks.multifidelity`).

Same initial design: a BO planner's first ``initial_points`` experiments are Sobol points
of the campaign seed, which are exactly the ``sobol`` baseline's first points; on a pool
they are uniform picks of unmeasured rows drawn exactly as the pool ``random`` baseline
draws. The report checks this for every seed (column "same design").

On the pools, other libraries' optimisers run beside them from the same initial rows
(:mod:`benchmarks.bench_baselines`: BayBE's default recommender, Ax's default generation
strategy, a plain BoTorch GP). Methods: qLogNEI and qLogNEHVI (Ament et al., NeurIPS
2023; Daulton et al., NeurIPS 2021) from :mod:`planners.bo`, against random search and
scrambled Sobol sequences.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: put the repository root first
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks import bench_hooks, bench_report
from benchmarks.bench_baselines import missing_library
from benchmarks.bench_problems import PROBLEMS, Problem, ProblemUnavailableError, build
from benchmarks.bench_runs import REPO, SPECS, cache_path, load_cached, run_cached

logger = logging.getLogger(__name__)

DEFAULT_RESULTS = REPO / "benchmarks" / "results" / "planners"
DEFAULT_DOCS = REPO / "docs" / "benchmarks.md"
QUICK_SEEDS = (0, 1, 2)
QUICK_BUDGET = 8


def parse_seeds(text: str) -> list[int]:
    """``"20"`` (seeds 0..19), ``"0-4"``, or ``"1,3,7"``.

    Raises:
        ValueError: If the text is none of these.
    """
    text = text.strip()
    try:
        if "," in text:
            return sorted({int(t) for t in text.split(",") if t.strip()})
        if "-" in text:
            lo, hi = (int(t) for t in text.split("-", 1))
            if hi < lo:
                raise ValueError
            return list(range(lo, hi + 1))
        n = int(text)
    except ValueError:
        raise ValueError(f"--seeds: expected N, A-B or a,b,c; got {text!r}") from None
    if n < 1:
        raise ValueError(f"--seeds: need at least one seed, got {text!r}")
    return list(range(n))


def quick(problem: Problem) -> Problem:
    """The problem cut down for a smoke run (short budgets, small initial design)."""
    opts = {**problem.bo_options, "initial_points": 4, "num_restarts": 2, "raw_samples": 32}
    return dataclasses.replace(
        problem,
        budget=QUICK_BUDGET,
        baseline_budget=QUICK_BUDGET if problem.pool is None else problem.baseline_budget,
        bo_options=opts,
    )


def run(
    problems: Sequence[str],
    seeds: Sequence[int],
    *,
    planners: Sequence[str] | None = None,
    results: Path = DEFAULT_RESULTS,
    execute: bool = True,
    quick_mode: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run (or load from the cache) every requested run and collect the records.

    Args:
        problems: Problem keys (in-process problems; hook keys are handled by the caller).
        seeds: The seeds; every planner of a problem gets the same ones.
        planners: Planner keys to run (default: each problem's own list).
        results: The cache directory.
        execute: Run what the cache lacks (``False``: only load what is there).
        quick_mode: Use :func:`quick` problems.
        verbose: Print a line per finished run.

    Returns:
        ``{"problems": {name: Problem}, "records": {name: {planner: [record, ...]}},
        "unavailable": {name: reason}}``.
    """
    out: dict[str, Any] = {"problems": {}, "records": {}, "unavailable": {}}
    built: dict[str, Problem] = {}
    for name in problems:
        try:
            p = build(name, results)
        except ProblemUnavailableError as exc:
            print(f"skipping {name}: {exc}", file=sys.stderr)
            out["unavailable"][name] = str(exc)
            continue
        built[name] = quick(p) if quick_mode else p
        out["problems"][name] = built[name]
        out["records"][name] = {}
    # seed-major order, so a run cut short leaves every problem with its first seeds done
    for seed in seeds:
        for name, p in built.items():
            for key in (*p.planners, *(p.optional_planners if planners is not None else ())):
                if planners is not None and key not in planners:
                    continue
                spec = SPECS[key]
                missing = missing_library(spec.planner)
                if missing is not None:
                    if key not in out["unavailable"]:
                        print(f"skipping {key}: {missing}", file=sys.stderr)
                        out["unavailable"][key] = missing
                    continue
                if execute:
                    t0 = time.perf_counter()
                    rec, cached = run_cached(results, p, spec, seed)
                    if verbose and not cached:
                        print(
                            f"{time.strftime('%H:%M:%S')} {name} {key} seed {seed}: "
                            f"{time.perf_counter() - t0:.1f} s",
                            flush=True,
                        )
                else:
                    loaded = load_cached(cache_path(results, name, key, seed), p, spec)
                    if loaded is None:
                        continue
                    rec = loaded
                out["records"][name].setdefault(key, []).append(rec)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    all_keys = [*PROBLEMS, *bench_hooks.HOOKS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--problems",
        default=",".join(all_keys),
        help=f"comma-separated, from: {', '.join(all_keys)}",
    )
    parser.add_argument(
        "--planners", default=None, help=f"comma-separated subset of: {', '.join(SPECS)}"
    )
    parser.add_argument("--seeds", default="20", help="N (0..N-1), A-B, or a,b,c")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 3 seeds, N=8, cheap acquisition; no docs unless --docs",
    )
    parser.add_argument("--results", type=Path, default=None, help="cache directory")
    parser.add_argument("--docs", type=Path, default=None, help="markdown file to update")
    parser.add_argument("--no-run", action="store_true", help="only score what is cached")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per run (default 1: on a shared machine, two threads made each "
        "BO ask 5-8x slower than one)",
    )
    args = parser.parse_args(argv)

    keys = [k.strip() for k in args.problems.split(",") if k.strip()]
    unknown = [k for k in keys if k not in all_keys]
    if unknown:
        parser.error(f"--problems: unknown {unknown}; known: {', '.join(all_keys)}")
    planners = None
    if args.planners:
        planners = [k.strip() for k in args.planners.split(",") if k.strip()]
        bad = [k for k in planners if k not in SPECS]
        if bad:
            parser.error(f"--planners: unknown {bad}; known: {', '.join(SPECS)}")
    try:
        seeds = list(QUICK_SEEDS) if args.quick and args.seeds == "20" else parse_seeds(args.seeds)
    except ValueError as exc:
        parser.error(str(exc))
    results = args.results or (
        DEFAULT_RESULTS.parent / "planners-quick" if args.quick else DEFAULT_RESULTS
    )
    docs = args.docs or (None if args.quick else DEFAULT_DOCS)

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(1, args.threads))
    data = run(
        [k for k in keys if k in PROBLEMS],
        seeds,
        planners=planners,
        results=results,
        execute=not args.no_run,
        quick_mode=args.quick,
    )
    hook_sections = [
        bench_hooks.run_hook(
            k,
            seeds=seeds,
            quick=args.quick,
            results=results,
            docs_dir=docs.parent if docs is not None else None,
        )
        for k in keys
        if k in bench_hooks.HOOKS
    ]
    figures = (docs.parent / "figures") if docs is not None else None
    markdown, failed_checks = bench_report.render(data, hook_sections, figures, docs)
    print(markdown)
    if docs is not None:
        bench_report.write_docs(docs, markdown)
        print(f"wrote {docs}", file=sys.stderr)
    return 1 if failed_checks else 0


if __name__ == "__main__":
    sys.exit(main())
