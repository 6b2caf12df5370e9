"""Screening benchmark: the ``screening`` planner on a 25,000-candidate list, beside baselines.

**The pool.** :func:`sim.materials.formula_world.enumerate_oxides` (25,000 charge-balanced
oxides: every ternary of 65 metals and metalloids in their common oxidation states with
cation counts 1-3, 14,587 of them, plus quaternaries with counts 1-2 drawn with seed 0),
written to ``.sdlab/screening/pool.csv`` (ids ``p00001`` ...), labelled by the
``formula-energy`` world's truth (a Pauling-type formation energy per atom fitted to
pymatgen's 2,135 experimental enthalpies; see that module) and minimised. A hit is a
candidate of the best 1 % (250). Features: Magpie (149 attributes, matminer), computed
once and cached in ``.sdlab/feature-cache`` (the planner's own cache).

**The runs.** For each of 10 seeds, 10 random initial candidates (the same for every
method), then 100 picks one at a time (110 experiments), by

* ``random``: uniform picks among the untried;
* ``forest (greedy)``: a plain scikit-learn ``RandomForestRegressor`` (defaults, 100 trees)
  on the same features, picking the untried candidate of best predicted mean;
* ``sdlab screening``: the planner (its default ``rf`` surrogate, or each surrogate of
  ``--surrogate``; ``list_gp`` on its default 20 principal components), with the
  acquisition of ``--acquisition`` (default: the planner's own), told the same initial rows.

It prints hits (median [IQR] over seeds), experiments to the first hit, the best value
found and seconds per suggestion.

**Speed** (``--speed``): one suggestion over 50,000 candidates (the pool's rows twice, the
copy jittered by 1e-6 of each feature's spread) at 10, 100 and 1,000 observations: the
planner's path (fit, mean and spread, closed-form EI) for the previous forest defaults (200
trees, held-out refit, one thread), ``rf``, ``mlp_ensemble`` and ``list_gp`` (on the 20
principal components, computed once per list and timed apart; its standard deviation
exact where the bound could win; ``mlp_ensemble`` only with ``--with-mlp``), wall and CPU
seconds; beside BoTorch qLogNEI on the same
fitted forest (128 samples, pruned baseline, as the ``discovery`` planner scores) over
2,000 of the candidates.

Run from the repository root:  python -m benchmarks.screening [--speed] [--seeds 10]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.ensemble import RandomForestRegressor

from models.objectives import Objective
from models.params import SearchSpace, StringParameter
from models.records import Observation
from planners.base import make_planner
from planners.candidate_list import read_candidates
from planners.ensemble_acq import select_batch, select_batch_refined
from planners.feature_cache import featurize_rows
from planners.screening import ScreeningPlanner, project
from sim.materials.formula_world import energies, enumerate_oxides
from surrogates.base import EnsembleSurrogate, make_surrogate
from surrogates.list_gp import ListGPSurrogate

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".sdlab" / "screening"
CACHE = ROOT / ".sdlab" / "feature-cache"
POOL_SIZE = 25_000
BUDGET = 110
N_INIT = 10
SPACE = SearchSpace(parameters=[StringParameter(name="candidate"), StringParameter(name="formula")])
OBJ = [Objective(name="formation_energy_ev_per_atom", direction="minimize")]


def pool() -> tuple[Path, list[str], np.ndarray, np.ndarray]:
    """The pool's CSV file, ids, Magpie rows and truth (rows whose features failed dropped)."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "pool.csv"
    if not path.exists():
        formulas = enumerate_oxides(POOL_SIZE, seed=0)
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "formula"])
            w.writerows([f"p{k + 1:05d}", f] for k, f in enumerate(formulas))
    rows = read_candidates(path).rows
    t0 = time.perf_counter()
    feats = featurize_rows(rows, "magpie", cache_dir=CACHE)
    print(
        f"features: {feats.x.shape}, {feats.computed} computed in {time.perf_counter() - t0:.1f} s"
    )
    kept = [rows[i] for i in feats.index]
    truth = energies([r.formula for r in kept])
    return path, [r.id for r in kept], feats.x, truth


def _summary(values: list[float]) -> str:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return f"{med:.3g} [{q1:.3g}, {q3:.3g}]"


def run_quality(
    n_seeds: int,
    acquisition: str | None,
    surrogates: list[str | None],
    variants: list[tuple[str, dict[str, Any]]] | None = None,
) -> None:
    """The hits table (see the module docstring)."""
    path, ids, x, truth = pool()
    n = len(ids)
    utility = -truth
    cut = np.sort(utility)[-max(1, n // 100)]
    hits_mask = utility >= cut
    print(f"pool: {n} candidates, {int(hits_mask.sum())} hits (formation energy <= {-cut:.3f})")
    results: dict[str, list[tuple[int, float, float, float]]] = {}

    def record(name: str, picked: list[int], seconds: list[float]) -> None:
        h = hits_mask[picked]
        first = float(np.argmax(h) + 1) if h.any() else float("nan")
        results.setdefault(name, []).append(
            (int(h.sum()), first, float(truth[picked].min()), float(np.mean(seconds or [0.0])))
        )

    for seed in range(n_seeds):
        rng = np.random.default_rng(1000 + seed)
        init = [int(i) for i in rng.choice(n, N_INIT, replace=False)]
        # random
        t0 = time.perf_counter()
        rest = [i for i in rng.permutation(n) if i not in set(init)]
        secs = [(time.perf_counter() - t0) / (BUDGET - N_INIT)] * (BUDGET - N_INIT)
        record("random", init + [int(i) for i in rest[: BUDGET - N_INIT]], secs)
        # plain forest, greedy
        picked, secs = list(init), []
        while len(picked) < BUDGET:
            t0 = time.perf_counter()
            rf = RandomForestRegressor(random_state=seed).fit(x[picked], utility[picked])
            pred = rf.predict(x)
            pred[picked] = -np.inf
            picked.append(int(np.argmax(pred)))
            secs.append(time.perf_counter() - t0)
        record("forest (greedy)", picked, secs)
        for surrogate in surrogates:
            name, picked, secs = _planner_run(path, ids, truth, init, seed, acquisition, surrogate)
            record(name, picked, secs)
        for label, extra in variants or []:
            _, picked, secs = _planner_run(
                path, ids, truth, init, seed, acquisition, "list_gp", extra
            )
            record(f"sdlab screening ({label})", picked, secs)
        print(f"seed {seed}: " + ", ".join(f"{k} {v[-1][0]}" for k, v in results.items()))
        _table(results, seed + 1)  # after every seed, so a stopped run leaves its table


def _table(results: dict[str, list[tuple[int, float, float, float]]], n_done: int) -> None:
    """Print the hits table over the seeds done so far."""
    print(f"\ntop-1 % hits within {BUDGET} experiments, {N_INIT} random initial, {n_done} seeds")
    print("| method | hits | first hit | best found (eV/atom) | s / suggestion |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        h, f, b, s = zip(*rows, strict=True)
        first = [v for v in f if v == v]
        print(
            f"| {name} | {_summary(list(h))} | {_summary(first) if first else '-'} "
            f"| {_summary(list(b))} | {np.mean(s):.3f} |"
        )


def _planner_run(
    path: Path,
    ids: list[str],
    truth: np.ndarray,
    init: list[int],
    seed: int,
    acquisition: str | None,
    surrogate: str | None,
    extra: dict[str, Any] | None = None,
) -> tuple[str, list[int], list[float]]:
    """One campaign of the ``screening`` planner, told ``init`` first (``extra``: more of
    its options, over the defaults given here)."""
    pos = {cid: i for i, cid in enumerate(ids)}
    planner = make_planner(
        "screening",
        SPACE,
        OBJ,
        seed=seed,
        options={
            "candidates": str(path),
            "cache_dir": str(CACHE),
            "initial_points": N_INIT,
            **({"acquisition": acquisition} if acquisition else {}),
            **({"surrogate": surrogate} if surrogate else {}),
            **(extra or {}),
        },
    )
    assert isinstance(planner, ScreeningPlanner)

    def obs(i: int) -> Observation:
        return Observation(
            parameters={"candidate": ids[i], "formula": "x"},
            objectives={OBJ[0].name: float(truth[i])},
        )

    planner.tell([obs(i) for i in init])
    picked, secs = list(init), []
    while len(picked) < BUDGET:
        d = planner.ask(1)
        i = pos[str(d.proposals[0].parameters["candidate"])]
        picked.append(i)
        secs.append(d.seconds)
        planner.tell([obs(i)])
    o = planner.opts
    return f"sdlab screening ({o.surrogate}, {o.acquisition})", picked, secs


def run_speed(with_mlp: bool = False) -> None:
    """Seconds per suggestion over 50,000 candidates (see the module docstring)."""
    from botorch.acquisition.logei import qLogNoisyExpectedImprovement
    from botorch.sampling.get_sampler import get_sampler

    _, _, x0, truth0 = pool()
    spread = x0.std(0)
    x = np.concatenate(
        [x0, x0 + 1e-6 * spread * np.random.default_rng(0).standard_normal(x0.shape)]
    )
    y = -np.concatenate([truth0, truth0])
    xs = torch.as_tensor((x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0))
    print(f"\nspeed: {x.shape[0]} candidates, {x.shape[1]} features")
    print("wall seconds, CPU seconds of this process in brackets")
    print("| surrogate | observations | fit (s) | score (s) | total (s) | qLogNEI, 2,000 (s) |")
    print("|---|---|---|---|---|---|")
    clock = lambda: (time.perf_counter(), time.process_time())  # noqa: E731
    show = lambda a, b: f"{b[0] - a[0]:.3f} [{b[1] - a[1]:.3f}]"  # noqa: E731
    make_surrogate("rf", n_estimators=5).fit(x[:30], y[:30]).predict(x[:10])  # imports
    t0 = clock()
    z = project(xs.numpy(), 20)
    print(f"list_gp's projection on 20 principal components, once per list: {show(t0, clock())}")
    rng = np.random.default_rng(0)
    for n_obs in (10, 100, 1000):
        train = rng.choice(x.shape[0], n_obs, replace=False)
        free = torch.ones(x.shape[0], dtype=torch.bool)
        free[torch.as_tensor(train)] = False
        for label, name, opts in SPEED_SURROGATES:
            if name == "mlp_ensemble" and not with_mlp:
                continue
            rows = z if name == "list_gp" else x
            t0 = clock()
            s = make_surrogate(name, seed=0, **opts).fit(rows[train], y[train])
            t1 = clock()
            extra = ""
            if isinstance(s, ListGPSurrogate):
                mean, bound = s.bounded_predictions(rows)
                _, _, std = select_batch_refined(
                    "ei",
                    mean,
                    bound,
                    lambda idx, gp=s, r=rows: gp.exact_std(r[idx.numpy()]),
                    xs,
                    1,
                    best=float(y[train].max()),
                    available=free,
                )
                extra = f" ({int((std < bound).sum())} exact)"
            else:
                assert isinstance(s, EnsembleSurrogate)
                _, mean, std = s.member_predictions(rows)
                select_batch("ei", mean, std, xs, 1, best=float(y[train].max()), available=free)
            t2 = clock()
            nei = "-"
            if label == "rf, defaults":
                model = s.as_botorch_model()
                cand = torch.as_tensor(x[:2000])
                probe: Any = model.posterior(cand[:1])
                sampler = get_sampler(probe, sample_shape=torch.Size([128]), seed=0)
                acq = qLogNoisyExpectedImprovement(
                    model,
                    X_baseline=torch.as_tensor(x[train]),
                    sampler=sampler,
                    prune_baseline=True,
                )
                with torch.no_grad():
                    torch.cat([acq(c.unsqueeze(1)) for c in cand.split(256)])
                nei = show(t2, clock())
            print(
                f"| {label} | {n_obs} | {show(t0, t1)} | {show(t1, t2)}{extra} "
                f"| {show(t0, t2)} | {nei} |",
                flush=True,
            )


SPEED_SURROGATES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "rf, before (200 trees, held-out refit, 1 thread)",
        "rf",
        {"n_estimators": 200, "out_of_bag": False, "n_jobs": 1},
    ),
    ("rf, defaults", "rf", {}),
    ("mlp_ensemble, defaults", "mlp_ensemble", {}),
    ("list_gp, defaults", "list_gp", {}),
]
"""The previous forest defaults, the current ones, the MLP ensemble and the list GP."""


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--acquisition", default=None, help="default: the planner's own")
    ap.add_argument(
        "--surrogate",
        default="",
        help="the planner's surrogates, comma-separated (default: its own); 'default' is its own; "
        "'none': only the --variant runs",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=JSON",
        help="one more list_gp run per seed with these planner options (JSON), e.g. "
        'matern=\'{"surrogate_options": {"kernel": "matern_gamma"}}\'; repeatable',
    )
    ap.add_argument("--speed", action="store_true", help="only the speed table")
    ap.add_argument("--with-mlp", action="store_true", help="the speed table's MLP rows too")
    args = ap.parse_args()
    if args.speed:
        run_speed(args.with_mlp)
    else:
        names = [None if v in ("", "default") else v for v in args.surrogate.split(",")]
        if args.surrogate == "none":  # only the --variant runs
            names = []
        variants = [(v.split("=", 1)[0], json.loads(v.split("=", 1)[1])) for v in args.variant]
        run_quality(args.seeds, args.acquisition, names, variants)


if __name__ == "__main__":
    main()
