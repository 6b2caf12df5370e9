"""Scoring benchmark runs: best-so-far curves, hypervolume, experiments to 95 %, summaries.

Every number is recomputed from the recorded points' noise-free values, never from what a
planner believed. A run's best-so-far value after ``n`` experiments is the best noise-free
value among its first ``n`` *successful* experiments; the hypervolume (two objectives) is
that of the noise-free outcomes of those experiments, with BoTorch's
:class:`~botorch.utils.multi_objective.box_decompositions.dominated.DominatedPartitioning`
and the problem's reference point (Daulton et al., NeurIPS 2020/2021 use the same).

Medians and inter-quartile ranges are over seeds. "Experiments to 95 %" is censored at the
run's budget: a run that never got there counts as infinitely many, and a median beyond the
budget is printed as ``> N``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from botorch.utils.multi_objective.box_decompositions.dominated import DominatedPartitioning

from benchmarks.bench_problems import Problem


def best_so_far(rec: Mapping[str, Any]) -> np.ndarray:
    """Best noise-free value of the first objective after each experiment (``nan`` until
    the first successful one), shape ``budget``."""
    y = np.array([r[0] for r in rec["y_true"]], dtype=np.float64)
    ok = np.array(rec["feasible"], dtype=bool)
    y = np.where(ok, y, -np.inf)
    best = np.maximum.accumulate(y)
    return np.where(np.isfinite(best), best, np.nan)


def hypervolume_curve(rec: Mapping[str, Any], ref_point: Sequence[float]) -> np.ndarray:
    """Dominated hypervolume of the noise-free outcomes after each experiment."""
    ref = torch.tensor(list(ref_point), dtype=torch.double)
    y = torch.tensor(rec["y_true"], dtype=torch.double)
    ok = torch.tensor(rec["feasible"], dtype=torch.bool)
    out = np.zeros(len(y))
    for n in range(1, len(y) + 1):
        pts = y[:n][ok[:n]]
        pts = pts[(pts > ref).all(dim=-1)]
        if len(pts):
            out[n - 1] = float(DominatedPartitioning(ref_point=ref, Y=pts).compute_hypervolume())
    return out


def curve(problem: Problem, rec: Mapping[str, Any]) -> np.ndarray:
    """The problem's progress curve of one run: hypervolume or best-so-far value."""
    if problem.ref_point is not None:
        return hypervolume_curve(rec, problem.ref_point)
    return best_so_far(rec)


def experiments_to(values: np.ndarray, threshold: float) -> float:
    """1-based number of experiments until ``values`` first reaches ``threshold``
    (``inf`` if never)."""
    hits = np.flatnonzero(np.nan_to_num(values, nan=-np.inf) >= threshold)
    return float(hits[0] + 1) if hits.size else math.inf


def infeasible_fraction(rec: Mapping[str, Any], after: int = 10) -> float:
    """Fraction of the experiments after the first ``after`` that failed."""
    later = rec["feasible"][after:]
    return float(sum(not f for f in later) / len(later)) if later else math.nan


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, 25th, 75th percentile); ``inf`` entries (censored runs) are allowed."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    finite_cap = 1e12
    q = np.quantile(np.where(np.isinf(x), finite_cap, x), [0.5, 0.25, 0.75])
    return tuple(math.inf if v >= finite_cap / 2 else float(v) for v in q)  # type: ignore[return-value]


def fmt(value: float, budget: int | None = None, digits: int = 3) -> str:
    """A number for a table; ``> N`` beyond a censoring budget."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if budget is not None and value > budget:
        return f"> {budget}"
    if math.isinf(value):
        return "∞"
    return f"{value:.{digits}g}"


def fmt_q(q: tuple[float, float, float], budget: int | None = None, digits: int = 3) -> str:
    """``median [q25, q75]``."""
    return f"{fmt(q[0], budget, digits)} [{fmt(q[1], budget, digits)}, {fmt(q[2], budget, digits)}]"


@dataclass
class PlannerSummary:
    """The scores of one planner on one problem, over its seeds."""

    planner: str
    seeds: list[int]
    budget: int
    at_n: tuple[float, float, float]
    regret_at_n: tuple[float, float, float]
    n_to_95: tuple[float, float, float]
    n_values: list[float]
    seconds_fit: float
    seconds_acq: float
    seconds_ask: float
    infeasible_after_10: float
    curves: np.ndarray
    commits: list[str]


def code_label(code: Mapping[str, Any]) -> str:
    """``<commit> (planners/bo.py <hash>[, local changes])`` of a run's ``code`` record."""
    dirty = ", local changes" if code.get("planners_dirty") else ""
    return f"{str(code.get('git_commit'))[:10]} (planners/bo.py {code.get('bo_py_sha1')}{dirty})"


def summarize(
    problem: Problem, planner: str, records: Sequence[Mapping[str, Any]]
) -> PlannerSummary:
    """Score one planner's runs on ``problem``; curves are cut at the problem's budget
    (baselines may run longer on a pool; ``n_to_95`` uses their whole run)."""
    n = problem.budget
    curves = [curve(problem, r) for r in records]
    at_n = [float(c[min(n, len(c)) - 1]) for c in curves]
    regret = [problem.optimum - v for v in at_n]
    n95 = [experiments_to(c, problem.threshold) for c in curves]
    fit = [a["seconds_fit"] for r in records for a in r["asks"] if a.get("seconds_fit") is not None]
    acq = [a["seconds_acq"] for r in records for a in r["asks"] if a.get("seconds_acq") is not None]
    ask = [a["seconds"] for r in records for a in r["asks"] if a.get("phase") == "bayesopt"]
    later = [f for r in records for f in r["feasible"][10:n]]
    width = min(len(c) for c in curves) if curves else 0
    return PlannerSummary(
        planner=planner,
        seeds=[int(r["seed"]) for r in records],
        budget=max((len(c) for c in curves), default=0),
        at_n=quartiles(at_n),
        regret_at_n=quartiles(regret),
        n_to_95=quartiles(n95),
        n_values=n95,
        seconds_fit=float(np.median(fit)) if fit else math.nan,
        seconds_acq=float(np.median(acq)) if acq else math.nan,
        seconds_ask=float(np.median(ask)) if ask else math.nan,
        infeasible_after_10=(sum(not f for f in later) / len(later)) if later else math.nan,
        curves=np.array([c[:width] for c in curves]) if curves else np.zeros((0, 0)),
        commits=sorted({code_label(r["code"]) for r in records}),
    )


def n_to_value(records: Sequence[Mapping[str, Any]], value: float) -> tuple[float, float, float]:
    """Quartiles over runs of the experiments until the best-so-far reaches ``value``."""
    return quartiles([experiments_to(best_so_far(r), value) for r in records])


def same_initial_design(a: Mapping[str, Any], b: Mapping[str, Any], n_init: int) -> bool:
    """Whether two runs' first ``n_init`` points are the same points (in order)."""
    pa, pb = a["points"][:n_init], b["points"][:n_init]
    if len(pa) < n_init or len(pb) < n_init:
        return False
    return all(
        set(x) == set(y)
        and all(math.isclose(float(x[k]), float(y[k]), rel_tol=0, abs_tol=1e-12) for k in x)
        for x, y in zip(pa, pb, strict=True)
    )


def plot(problem: Problem, summaries: Sequence[PlannerSummary], path: str) -> None:
    """Median best-so-far (or hypervolume) against N with the inter-quartile band (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=110)
    n = problem.budget
    for s in summaries:
        if s.curves.size == 0:
            continue
        c = s.curves[:, :n]
        x = np.arange(1, c.shape[1] + 1)
        med = np.nanmedian(c, axis=0)
        lo, hi = np.nanquantile(c, 0.25, axis=0), np.nanquantile(c, 0.75, axis=0)
        (line,) = ax.plot(x, med, label=f"{s.planner} ({len(s.seeds)} seeds)")
        ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color())
    best = "maximal hypervolume" if problem.multi_objective else "optimum"
    ax.axhline(problem.optimum, color="k", ls="--", lw=0.8, label=best)
    ax.axhline(problem.threshold, color="grey", ls=":", lw=0.8, label="95 % threshold")
    ax.set_xlabel("experiments N")
    ax.set_ylabel("hypervolume" if problem.multi_objective else "best so far (noise-free)")
    ax.set_title(problem.name)
    if not problem.multi_objective and problem.pool is None:
        lo_y = min(float(np.nanquantile(s.curves[:, -1], 0.1)) for s in summaries if s.curves.size)
        ax.set_ylim(min(lo_y, problem.median), problem.optimum + 0.05 * abs(problem.optimum - lo_y))
    ax.legend(fontsize=8, loc="upper left" if problem.multi_objective else "lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
