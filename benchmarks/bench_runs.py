"""One benchmark run (a planner on a problem with a seed), in-process, and its JSON cache.

A run is the plain ask/tell loop a campaign performs, without the controller: ask the
planner for ``q`` experiments, evaluate the noise-free truth at each, add seeded Gaussian
noise where the problem is noisy, fail the experiments that land in a hidden infeasible
region, tell the planner, repeat until the budget is spent. Everything needed to score the
run again is recorded: the points, the noise-free and the observed values, which
experiments failed, and the seconds each ask took (fit and acquisition separately, from the
BO planners' decision details), with the git commit that produced them.

The noise of the ``k``-th experiment depends only on (seed, k), so every planner of a seed
sees the same noise sequence (common random numbers).

Runs are cached as ``<results>/<problem>/<planner>/seed_<s>.json``; a cached run whose
problem fingerprint and planner spec match (and, for sdlab's BO planners, whose planner
code is the code on disk) is reused, so a long benchmark can be done in pieces and
resumed after an interruption.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_baselines import BASELINES, make_baseline
from benchmarks.bench_problems import PoolRandom, PoolSobol, Problem
from models.records import Observation
from planners.base import Planner, make_planner

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class PlannerSpec:
    """A planner as the benchmark runs it: a registered name, options and batch size."""

    key: str
    planner: str
    q: int = 1
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def bayesian(self) -> bool:
        """Whether this is a BO planner (it gets the problem's ``bo_options``)."""
        return self.planner not in ("random", "sobol")


SPECS = {
    s.key: s
    for s in (
        PlannerSpec("random", "random"),
        PlannerSpec("sobol", "sobol"),
        PlannerSpec("qlognei", "qlognei"),
        PlannerSpec("qlognei-q4", "qlognei", q=4),
        # the GP priors sdlab's bo had before its Gamma priors (surrogates/gp.py), as a baseline
        PlannerSpec("qlognei-botorch-priors", "qlognei", options={"gp_priors": "botorch"}),
        # both GPs fitted each ask, one kept by leave-one-out score / by the MAP objective
        PlannerSpec("qlognei-loo", "qlognei", options={"gp_priors": "loo"}),
        PlannerSpec("qlognei-evidence", "qlognei", options={"gp_priors": "evidence"}),
        PlannerSpec("qlognei-laplace", "qlognei", options={"gp_priors": "laplace"}),
        PlannerSpec("qlognei-gamma-2", "qlognei", options={"gp_priors": "gamma-2"}),
        PlannerSpec("qlognei-gamma-1.5", "qlognei", options={"gp_priors": "gamma-1.5"}),
        PlannerSpec("qlognei-mixture", "qlognei", options={"gp_priors": "mixture"}),
        PlannerSpec("qlognehvi", "qlognehvi"),
        # other libraries' defaults (benchmarks/bench_baselines.py), same initial design
        PlannerSpec("baybe", "baybe"),
        PlannerSpec("ax", "ax"),
        PlannerSpec("botorch", "botorch"),
    )
}
"""Every planner the benchmark knows, by the key used on the command line."""


def build_planner(problem: Problem, spec: PlannerSpec, seed: int) -> Planner:
    """The planner of ``spec`` for ``problem`` (pool baselines on pool problems)."""
    if spec.planner in BASELINES:
        return make_baseline(
            spec.planner,
            problem.space,
            problem.objectives,
            seed=seed,
            pool=problem.pool,
            initial_points=problem.bo_options.get("initial_points"),
        )
    if problem.pool is not None and not spec.bayesian:
        cls = PoolRandom if spec.planner == "random" else PoolSobol
        return cls(problem.space, problem.objectives, seed=seed, pool=problem.pool)
    options = {**(problem.bo_options if spec.bayesian else {}), **spec.options}
    return make_planner(spec.planner, problem.space, problem.objectives, seed=seed, options=options)


def code_version() -> dict[str, Any]:
    """The git commit of the checkout, whether planners/ has local changes, and the hash
    of planners/bo.py as it is on disk (the planners change while the benchmark runs)."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip()

    bo = REPO / "planners" / "bo.py"
    return {
        "git_commit": git("rev-parse", "HEAD"),
        "planners_dirty": bool(git("status", "--porcelain", "--", "planners", "surrogates")),
        "bo_py_sha1": hashlib.sha1(bo.read_bytes()).hexdigest()[:12] if bo.exists() else "",
        "planner_code_sha1": planner_code_hash(),
    }


def planner_code_hash() -> str:
    """One hash of every module of ``planners/`` and ``surrogates/`` as they are on disk:
    what sdlab's planners decide depends on all of them (GP builders, encodings, pools)."""
    digest = hashlib.sha1()
    for package in ("planners", "surrogates"):
        for path in sorted((REPO / package).glob("*.py")):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def machine() -> dict[str, Any]:
    """Where the runs were made."""
    import botorch
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "botorch": botorch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def run_one(problem: Problem, spec: PlannerSpec, seed: int, budget: int | None = None) -> dict:
    """Run ``spec`` on ``problem`` with ``seed`` and return the run's record.

    Args:
        problem: The problem.
        spec: The planner.
        seed: The campaign seed (planner seed; noise seed).
        budget: Experiments to run (default: the problem's budget for BO planners, its
            ``baseline_budget`` for random and Sobol).

    Returns:
        The JSON-ready record (see the module docstring).
    """
    if budget is None:
        budget = problem.budget if spec.bayesian else (problem.baseline_budget or problem.budget)
    planner = build_planner(problem, spec, seed)
    noise = np.random.default_rng([seed, 20261126])
    names = [o.name for o in problem.objectives]
    rec: dict[str, Any] = {
        "problem": problem.name,
        "planner": spec.key,
        "registered_planner": spec.planner,
        "q": spec.q,
        "seed": seed,
        "budget": budget,
        "fingerprint": problem.fingerprint(),
        "spec_options": spec.options,
        "code": code_version(),
        "points": [],
        "y_true": [],
        "y_obs": [],
        "feasible": [],
        "asks": [],
    }
    t_start = time.perf_counter()
    while len(rec["points"]) < budget:
        q = min(spec.q, budget - len(rec["points"]))
        decision = planner.ask(q)
        d = decision.details
        rec["asks"].append(
            {
                "n_before": len(rec["points"]),
                "q": q,
                "phase": d.get("phase"),
                "seconds": decision.seconds,
                "seconds_fit": d.get("seconds_fit"),
                "seconds_acq": d.get("seconds_acq"),
            }
        )
        obs: list[Observation] = []
        for prop in decision.proposals:
            point = dict(prop.parameters)
            true = problem.truth(point)
            ok = problem.infeasible is None or not problem.infeasible(point)
            eps = noise.normal(size=len(names)) * problem.noise_std
            observed = {n: true[n] + float(e) for n, e in zip(names, eps, strict=True)}
            rec["points"].append(point)
            rec["y_true"].append([true[n] for n in names])
            rec["y_obs"].append([observed[n] for n in names] if ok else None)
            rec["feasible"].append(ok)
            obs.append(
                Observation(parameters=point, objectives=observed if ok else {}, feasible=ok)
            )
        planner.tell(obs)
    rec["wall_s"] = time.perf_counter() - t_start
    rec["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return rec


def cache_path(results: Path, problem: str, planner: str, seed: int) -> Path:
    """Where the record of one run is cached."""
    return results / problem / planner / f"seed_{seed}.json"


def load_cached(
    path: Path, problem: Problem, spec: PlannerSpec, *, current_code: bool = False
) -> dict | None:
    """The cached record at ``path`` if it matches the problem and the spec, else ``None``.

    With ``current_code`` a run of sdlab's own BO planners must also have been made by the
    planner code now on disk (:func:`planner_code_hash`), so that changing a planner
    reruns its runs; the baselines (random, Sobol, other libraries) do not depend on it.
    """
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = (
        rec.get("fingerprint") == json.loads(json.dumps(problem.fingerprint()))
        and rec.get("q") == spec.q
        and rec.get("registered_planner") == spec.planner
        and rec.get("spec_options") == spec.options
    )
    if same and current_code and spec.bayesian and spec.planner not in BASELINES:
        same = rec.get("code", {}).get("planner_code_sha1") == planner_code_hash()
    return rec if same else None


def run_cached(
    results: Path, problem: Problem, spec: PlannerSpec, seed: int, budget: int | None = None
) -> tuple[dict, bool]:
    """The record of one run, from the cache or freshly run (then cached atomically).

    Returns:
        ``(record, was_cached)``.
    """
    path = cache_path(results, problem.name, spec.key, seed)
    rec = load_cached(path, problem, spec, current_code=True)
    if rec is not None and (budget is None or rec["budget"] == budget):
        return rec, True
    rec = run_one(problem, spec, seed, budget)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, separators=(",", ":")))
    tmp.replace(path)
    return rec, False
