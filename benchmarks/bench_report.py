"""The planner benchmark's report: tables, targets, figures, and the docs file's results.

:func:`render` turns the runs collected by :func:`benchmarks.planner_bench.run` (and the
sections of the other benchmark modules) into markdown; :func:`write_docs` puts it into
``docs/benchmarks.md`` between two marker comments, leaving the hand-written text around
them alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_hooks import HookSection
from benchmarks.bench_metrics import (
    PlannerSummary,
    fmt,
    fmt_q,
    n_to_value,
    plot,
    same_initial_design,
    summarize,
)
from benchmarks.bench_problems import REFERENCE_SAMPLES, Problem
from benchmarks.bench_runs import SPECS, machine

BEGIN = "<!-- BEGIN GENERATED: python -m benchmarks.planner_bench -->"
END = "<!-- END GENERATED -->"

SUZUKI_TOP1 = 93.8
"""Yield (%) of the Suzuki pool's top 1 % (its three best rows), the issue's threshold."""


def initial_points(problem: Problem) -> int:
    """The BO planners' initial design size on ``problem`` (their default rule)."""
    n = problem.bo_options.get("initial_points")
    return int(n) if n is not None else min(max(2 * len(problem.space), 4), 10)


def design_check(problem: Problem, records: Mapping[str, list[dict]]) -> dict[str, str]:
    """Per BO planner, ``"k/n"`` seeds whose initial design equals the baseline's."""
    ref_key = "random" if problem.pool is not None else "sobol"
    ref = {r["seed"]: r for r in records.get(ref_key, [])}
    n_init = initial_points(problem)
    out: dict[str, str] = {ref_key: "reference"}
    for key, recs in records.items():
        spec = SPECS[key]
        if not spec.bayesian:
            continue
        if problem.pool is not None and spec.q > 1:
            out[key] = "batch draw"
            continue
        pairs = [(r, ref[r["seed"]]) for r in recs if r["seed"] in ref]
        ok = sum(same_initial_design(a, b, n_init) for a, b in pairs)
        out[key] = f"{ok}/{len(pairs)}"
    return out


def acceleration(problem: Problem, s: PlannerSummary, rnd: PlannerSummary | None) -> str:
    """Random's median experiments to 95 % over this planner's (exact random on
    single-objective problems, the random runs on the hypervolume problem)."""
    m = s.n_to_95[0]
    if not math.isfinite(m):
        return "-"
    if not problem.multi_objective:
        base = problem.random_median_n()
        if math.isfinite(base):
            return f"{base / m:.1f}"
        return f"> {math.log(2) * REFERENCE_SAMPLES / m:.0f}"
    if rnd is None:
        return "-"
    if math.isfinite(rnd.n_to_95[0]):
        return f"{rnd.n_to_95[0] / m:.1f}"
    return f"> {rnd.budget / m:.1f}"


def problem_table(
    problem: Problem, sums: Mapping[str, PlannerSummary], design: Mapping[str, str]
) -> str:
    """The markdown table of one problem."""
    n = problem.budget
    multi = problem.multi_objective
    head = [
        "planner",
        "seeds",
        f"{'HV' if multi else 'best'} at N={n}",
        f"{'HV gap' if multi else 'regret'} at N={n}",
        "N to 95 %",
        "x vs random",
        "same design",
        "s fit / ask",
        "s acq / ask",
    ]
    fails = problem.infeasible is not None
    if fails:
        head.append("infeasible after 10")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rnd = sums.get("random")
    for key, s in sums.items():
        cap = s.budget
        row = [
            key,
            str(len(s.seeds)),
            fmt_q(s.at_n, digits=4),
            fmt_q(s.regret_at_n, digits=3),
            fmt_q(s.n_to_95, cap),
            "1 (ref.)" if key == "random" else acceleration(problem, s, rnd),
            design.get(key, "-"),
            fmt(s.seconds_fit, digits=2),
            fmt(s.seconds_acq, digits=2),
        ]
        if fails:
            row.append(fmt(100 * s.infeasible_after_10, digits=3) + " %")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def target(
    rows: list[dict[str, Any]], what: str, measured: str, baseline: str, met: bool | None
) -> None:
    """Append one row of the targets table."""
    rows.append({"target": what, "measured": measured, "baseline": baseline, "met": met})


def targets(
    data: Mapping[str, Any],
    sums: Mapping[str, Mapping[str, PlannerSummary]],
    hooks: Sequence[HookSection],
) -> list[dict[str, Any]]:
    """The issue's targets, each beside what was measured and its baseline."""
    rows: list[dict[str, Any]] = []
    h6 = sums.get("hartmann6", {})
    if "qlognei" in h6:
        bo, sob = h6["qlognei"], h6.get("sobol")
        target(
            rows,
            "Hartmann6: median best >= 3.1 by N = 35",
            f"qlognei {bo.at_n[0]:.3f} ({len(bo.seeds)} seeds)",
            f"sobol {sob.at_n[0]:.3f}" if sob else "-",
            bo.at_n[0] >= 3.1,
        )
    recs = data["records"].get("suzuki", {})
    if "qlognei" in recs:
        p: Problem = data["problems"]["suzuki"]
        bo_top = n_to_value(recs["qlognei"], SUZUKI_TOP1)
        rnd_top = n_to_value(recs.get("random", []), SUZUKI_TOP1)
        m = len(p.pool or [])
        target(
            rows,
            f"Suzuki: top 1 % (yield >= {SUZUKI_TOP1}) in a median <= 10 experiments",
            f"qlognei {fmt_q(bo_top, 30)} ({len(recs['qlognei'])} seeds)",
            f"random {fmt_q(rnd_top)}; exact random median {p.random_median_n():.0f}, "
            f"mean {(m + 1) / 4:.0f}",
            bo_top[0] <= 10,
        )
        bo_opt = n_to_value(recs["qlognei"], p.optimum)
        rnd_opt = n_to_value(recs.get("random", []), p.optimum)
        target(
            rows,
            f"Suzuki: pool optimum ({p.optimum:g}) by 20 (median)",
            f"qlognei {fmt_q(bo_opt, 30)}",
            f"random {fmt_q(rnd_opt)}",
            bo_opt[0] <= 20,
        )
        s = sums["suzuki"]["qlognei"]
        acc = acceleration(p, s, sums["suzuki"].get("random"))
        ok = acc not in ("-",) and float(acc.lstrip("> ")) >= 6
        target(
            rows,
            "Pool problems: >= 6x fewer experiments than random to 95 %",
            f"suzuki qlognei {acc}x (median {fmt(s.n_to_95[0], 30)})",
            f"random exact median {p.random_median_n():.0f}",
            ok,
        )
    pool_targets(rows, data, sums)
    for name in ("suzuki", "branin", "hartmann6"):
        ps = sums.get(name, {})
        if "qlognei" in ps and "qlognei-q4" in ps:
            a, b = ps["qlognei"].n_to_95[0], ps["qlognei-q4"].n_to_95[0]
            ratio = b / a if math.isfinite(a) and math.isfinite(b) else math.nan
            target(
                rows,
                f"{name}: batch q = 4 needs <= 1.3x the experiments of q = 1 (to 95 %)",
                f"q=4 {fmt(b, ps['qlognei-q4'].budget)} / q=1 {fmt(a, ps['qlognei'].budget)}"
                f" = {fmt(ratio, digits=3)}",
                "-",
                None if math.isnan(ratio) else ratio <= 1.3,
            )
    hf = sums.get("hartmann6-failures", {})
    if "qlognei" in hf:
        f = hf["qlognei"].infeasible_after_10
        rnd = hf.get("random")
        target(
            rows,
            "Failures: < 10 % infeasible proposals after the first 10 experiments",
            f"qlognei {100 * f:.1f} % ({len(hf['qlognei'].seeds)} seeds)",
            f"random {100 * rnd.infeasible_after_10:.1f} %" if rnd else "-",
            f < 0.10,
        )
    for h in hooks:
        rows.extend(h.targets)
    if not any(h.key == "phase-map" and h.targets for h in hooks):
        target(
            rows,
            "Phase map: 90 % accurate with <= 1/5 of the experiments random needs",
            "not measured here (benchmarks.active_learning)",
            "-",
            None,
        )
    return rows


def pool_targets(
    rows: list[dict[str, Any]],
    data: Mapping[str, Any],
    sums: Mapping[str, Mapping[str, PlannerSummary]],
) -> None:
    """Issue 16's aim on the pools: sdlab's ``qlognei`` (the default ``bo``) needs no more
    experiments to 95 % (median) than the best of BayBE, Ax and a plain BoTorch GP on every
    pool, and at least 5x fewer than random in the geometric mean. A median not reached
    within the budget counts as the budget, so a ratio from it is a bound (``>=``)."""
    pools = [
        n
        for n, p in data["problems"].items()
        if p.pool is not None and "qlognei" in sums.get(n, {})
    ]
    external = ("botorch", "baybe", "ax")
    if not pools or not any(k in sums[n] for n in pools for k in external):
        return
    worse, shown, ratios, bounded = [], [], [], False
    for name in pools:
        ps = sums[name]
        bo = ps["qlognei"]
        others = {k: ps[k].n_to_95[0] for k in external if k in ps}
        best_key = min(others, key=lambda k: others[k]) if others else None
        bo_n = bo.n_to_95[0]
        if best_key is not None:
            best_n = others[best_key]
            shown.append(
                f"{name}: {fmt(bo_n, bo.budget)} vs {best_key} {fmt(best_n, ps[best_key].budget)}"
            )
            if math.isfinite(best_n) and (not math.isfinite(bo_n) or bo_n > best_n):
                worse.append(name)
        base = data["problems"][name].random_median_n()
        n = bo_n if math.isfinite(bo_n) else float(bo.budget)
        bounded |= not math.isfinite(bo_n)
        if math.isfinite(base):
            ratios.append(base / n)
    target(
        rows,
        "Pools: qlognei (default bo) needs no more experiments to 95 % than the best of "
        "BayBE, Ax and plain BoTorch, on every pool (medians)",
        "; ".join(shown),
        f"worse on {', '.join(worse)}" if worse else "-",
        not worse,
    )
    if ratios:
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        target(
            rows,
            "Pools: >= 5x fewer experiments than random to 95 % (geometric mean)",
            f"qlognei {'>= ' if bounded else ''}{geo:.1f}x over {len(ratios)} pools",
            "random: exact median of draws without replacement",
            geo >= 5,
        )


def targets_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The targets as markdown, with met / NOT met / not run."""
    lines = ["| target | measured | baseline | met? |", "|---|---|---|---|"]
    for r in rows:
        met = r.get("met")
        word = "not run" if met is None else ("**met**" if met else "**NOT met**")
        lines.append(f"| {r['target']} | {r['measured']} | {r['baseline']} | {word} |")
    return "\n".join(lines) + "\n"


def render(
    data: Mapping[str, Any], hooks: Sequence[HookSection], figures: Path | None, docs: Path | None
) -> tuple[str, list[str]]:
    """The report's markdown and the list of failed consistency checks."""
    sums: dict[str, dict[str, PlannerSummary]] = {}
    failed: list[str] = []
    body: list[str] = []
    commits: set[str] = set()
    for name, problem in data["problems"].items():
        recs = data["records"].get(name, {})
        if not recs:
            body.append(f"### {name}\n\nNo finished runs yet.\n")
            continue
        sums[name] = {k: summarize(problem, k, v) for k, v in recs.items() if v}
        for s in sums[name].values():
            commits.update(s.commits)
        design = design_check(problem, recs)
        failed += [
            f"{name}/{k}: initial design differs ({v})"
            for k, v in design.items()
            if "/" in v and v.split("/")[0] != v.split("/")[1]
        ]
        body.append(
            f"### {name}\n\n{problem.description}. N = {problem.budget}; "
            f"optimum {problem.optimum:.6g}; 95 % threshold {problem.threshold:.5g}"
            + (
                f"; random search's exact median to it: {problem.random_median_n():.0f}"
                if not problem.multi_objective and math.isfinite(problem.random_median_n())
                else ""
            )
            + ".\n"
        )
        body.append(problem_table(problem, sums[name], design))
        if figures is not None:
            figures.mkdir(parents=True, exist_ok=True)
            png = figures / f"bench_{name}.png"
            plot(problem, list(sums[name].values()), str(png))
            rel = png.relative_to(docs.parent) if docs is not None else png
            body.append(f"![{name}: best so far]({rel.as_posix()})\n")
    for name, reason in data["unavailable"].items():
        body.append(f"### {name}\n\nSkipped: {reason}\n")
    for h in hooks:
        body.append(f"### {h.title}\n\n{h.markdown}")
    info = machine()
    head = [
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {info['platform']} "
        f"({info['cpus']} CPUs, torch {info['torch']} with {info['torch_threads']} threads, "
        f"BoTorch {info['botorch']}); runs made by commit(s) {', '.join(sorted(commits)) or '-'}.",
        "",
        "#### Targets",
        "",
        targets_table(targets(data, sums, hooks)),
    ]
    if failed:
        head += ["**Consistency checks failed:** " + "; ".join(failed), ""]
    return "\n".join(head) + "\n" + "\n".join(body), failed


def write_docs(path: Path, generated: str) -> None:
    """Put ``generated`` between the markers of ``path`` (created if missing)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + "\n\n" + BEGIN + "\n" + END + "\n"
    pre, rest = text.split(BEGIN, 1)
    _, post = rest.split(END, 1)
    path.write_text(pre + BEGIN + "\n" + generated.rstrip() + "\n" + END + post)
