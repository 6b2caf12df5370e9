"""Adapters that bring the other benchmark modules into the planner benchmark's report.

Each of ``benchmarks/active_learning.py`` (phase map), ``benchmarks/sara.py`` (SARA
world), ``benchmarks/planner_speed.py`` (seconds per suggestion at n = 100 ... 10 000) and
``benchmarks/multifidelity.py`` provides ``run(...)`` and ``main()``. When the module is
importable, :func:`run_hook` calls its ``run`` with the arguments its :class:`Hook` entry
names (the module's own command-line defaults; ``seeds`` unless the module keeps its own),
only those its signature has, and shows the result: with the module's own text formatter
(``format_table``/``table``) in a code block and its ``plot`` as a PNG when it has them,
else generically:

* a list of row dicts: one table (the union of their keys, in first-seen order, as
  columns);
* a dict: ``markdown`` (used as is), ``title``, ``notes`` (text under the title), ``rows``
  or ``table`` (a list of row dicts), ``tables`` (``{caption: rows}``), ``figures`` (paths
  of images, linked relative to the docs), and ``targets``: rows ``{"target": ...,
  "measured": ..., "baseline": ..., "met": bool | None}`` that join the report's targets
  table.

A module that is absent (its branch not merged yet) or that raises gives a section that
says so, and the rest of the report is still written.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import os
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hook:
    """How to run one sibling benchmark module and show what it returns.

    Attributes:
        module: The module's import name.
        title: Section title in the report.
        full: Keyword arguments of ``run`` for the full benchmark (only those its signature
            has are passed; the module's own command-line defaults).
        quick: The same for ``--quick``.
        pass_seeds: Give ``run`` the benchmark's ``seeds`` (off where the module's own
            default is deliberately small, as the timing benchmark's).
        formatters: Names of the module's own text formatters, tried in order.
        plot: How the module's ``plot`` is called: ``"path"`` (a PNG path),
            ``"dir"`` (a directory, returns the path) or ``""`` (not called).
    """

    module: str
    title: str
    full: Mapping[str, Any] = field(default_factory=dict)
    quick: Mapping[str, Any] = field(default_factory=dict)
    pass_seeds: bool = True
    formatters: tuple[str, ...] = ("format_table", "table", "markdown")
    plot: str = ""


HOOKS = {
    "phase-map": Hook(
        "benchmarks.active_learning",
        "Active learning: synthetic phase map",
        # batches of 5 with the map scored every 5 experiments on a 40 x 40 grid: the
        # module's own documented run, sized for two cores
        full={"n_max": 60, "step": 5, "grid": 40, "batch": 5},
        quick={"n_max": 20},
        plot="path",
    ),
    "sara": Hook("benchmarks.sara", "SARA world", {"n_max": 60}, {"n_max": 20}, plot="dir"),
    "speed": Hook(
        "benchmarks.planner_speed",
        "Seconds per suggestion vs n (fit and acquisition)",
        full={"sizes": (100, 500, 2000, 10000)},
        quick={"sizes": (100,), "iterations": 1},
        pass_seeds=False,
    ),
    "mf": Hook(
        "benchmarks.multifidelity",
        "Multi-fidelity",
        {"budget": 40.0, "seeds": 10},
        {"budget": 10.0, "seeds": 2},
        pass_seeds=False,
    ),
}
"""Problem key -> how to run its module."""


@dataclass
class HookSection:
    """What one adapter contributes to the report."""

    key: str
    title: str
    markdown: str
    targets: list[dict[str, Any]] = field(default_factory=list)
    ran: bool = False


def rows_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of row dicts (columns: the union of their keys, first seen first)."""
    if not rows:
        return "_(no rows)_\n"
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("|", "\\|") if v is not None else "-"

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _call_kwargs(
    fn: Any, hook: Hook, seeds: Sequence[int], quick: bool, results: Path
) -> dict[str, Any]:
    params = inspect.signature(fn).parameters
    offered: dict[str, Any] = dict(hook.quick if quick else hook.full)
    if hook.pass_seeds:
        offered["seeds"] = list(seeds)
    offered.setdefault("quick", quick)
    offered.setdefault("results_dir", results.parent / "hooks")
    return {k: v for k, v in offered.items() if k in params}


def phase_map_targets(result: Any) -> list[dict[str, Any]]:
    """The issue's phase-map target from :mod:`benchmarks.active_learning`'s result:
    90 % map accuracy with at most 1/5 of the experiments random sampling needs."""
    try:
        got = result["planners"]
        b, r = got["boundary"]["n_target_median"], got["random"]["n_target_median"]
        n = len(got["boundary"]["n_target"])
    except (KeyError, TypeError):
        return []
    ratio = r / b if b and math.isfinite(b) else math.nan
    return [
        {
            "target": "Phase map: 90 % accurate with <= 1/5 of the experiments random needs",
            "measured": f"boundary {b:g} experiments ({n} seeds)",
            "baseline": f"random {r:g}; ratio {ratio:.2f}",
            "met": None if math.isnan(ratio) else ratio >= 5.0,
        }
    ]


def to_markdown(result: Any, docs_dir: Path | None) -> tuple[str, list[dict[str, Any]]]:
    """Turn a module's ``run`` result into markdown and target rows (see the docstring)."""
    if isinstance(result, Sequence) and not isinstance(result, (str, bytes)):
        return rows_table(list(result)), []
    if not isinstance(result, Mapping):
        return f"```\n{result!r}\n```\n", []
    parts: list[str] = []
    if result.get("notes"):
        parts.append(str(result["notes"]).strip() + "\n")
    if result.get("markdown"):
        parts.append(str(result["markdown"]).strip() + "\n")
    rows = result.get("rows", result.get("table"))
    if rows:
        parts.append(rows_table(rows))
    for caption, table in dict(result.get("tables") or {}).items():
        parts.append(f"**{caption}**\n\n" + rows_table(table))
    for fig in result.get("figures") or ():
        rel = os.path.relpath(Path(fig).resolve(), docs_dir.resolve()) if docs_dir else str(fig)
        parts.append(f"![{Path(fig).stem}]({rel})\n")
    return "\n".join(parts) or "_(the module returned nothing to show)_\n", list(
        result.get("targets") or []
    )


def _module_text(module: Any, hook: Hook, result: Any) -> str | None:
    for name in hook.formatters:
        fn = getattr(module, name, None)
        if callable(fn):
            return "```text\n" + str(fn(result)).rstrip() + "\n```\n"
    return None


def _module_plot(module: Any, hook: Hook, result: Any, figures: Path | None) -> Path | None:
    fn = getattr(module, "plot", None)
    if not hook.plot or figures is None or not callable(fn):
        return None
    figures.mkdir(parents=True, exist_ok=True)
    if hook.plot == "path":
        path = figures / f"bench_{hook.module.rsplit('.', 1)[-1]}.png"
        fn(result, path)
        return path
    out = fn(result, figures)
    return Path(out) if out else None


def run_hook(
    key: str, *, seeds: Sequence[int], quick: bool, results: Path, docs_dir: Path | None = None
) -> HookSection:
    """Run the benchmark module behind ``key`` if it is importable; never raises."""
    hook = HOOKS[key]
    title = hook.title
    try:
        module = importlib.import_module(hook.module)
    except ImportError as exc:
        msg = f"Not run: `{hook.module}` is not importable here ({exc}); its branch is not merged."
        print(f"skipping {key}: {msg}")
        return HookSection(key, title, msg + "\n")
    fn = getattr(module, "run", None)
    if not callable(fn):
        return HookSection(key, title, f"Not run: `{hook.module}` has no `run()`.\n")
    try:
        result = fn(**_call_kwargs(fn, hook, seeds, quick, results))
        text = _module_text(module, hook, result)
        figures = docs_dir / "figures" if docs_dir is not None else None
        png = _module_plot(module, hook, result, figures)
    except Exception:  # a broken sibling benchmark must not lose the planner report
        logger.exception("benchmark hook %s failed", key)
        tail = traceback.format_exc().strip().splitlines()[-1]
        return HookSection(key, title, f"Failed: `{hook.module}` raised `{tail}`.\n")
    generic, targets = to_markdown(result, docs_dir)
    if text is None:
        text = generic
    if png is not None and docs_dir is not None:
        text += f"\n![{key}]({os.path.relpath(png.resolve(), docs_dir.resolve())})\n"
    if key == "phase-map":
        targets = targets or phase_map_targets(result)
    if isinstance(result, Mapping) and result.get("title"):
        title = str(result["title"])
    return HookSection(key, title, text, targets, ran=True)
