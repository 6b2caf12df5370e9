"""Adapters that bring the other benchmark modules into the planner benchmark's report.

Each of ``benchmarks/active_learning.py`` (phase map), ``benchmarks/sara.py`` (SARA
world), ``benchmarks/planner_speed.py`` (seconds per suggestion at n = 100 ... 10 000) and
``benchmarks/multifidelity.py`` provides ``run(...) -> dict | rows`` and ``main()``. When
the module is importable, :func:`run_hook` calls its ``run`` with those of ``seeds``,
``quick`` and ``results_dir`` (or ``out_dir``) that its signature accepts, and turns what
it returns into a markdown section:

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
import os
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

HOOKS = {
    "phase-map": ("benchmarks.active_learning", "Active learning: synthetic phase map"),
    "sara": ("benchmarks.sara", "SARA world"),
    "speed": ("benchmarks.planner_speed", "Seconds per suggestion vs n"),
    "mf": ("benchmarks.multifidelity", "Multi-fidelity"),
}
"""Problem key -> (module, section title)."""


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


def _call_kwargs(fn: Any, seeds: Sequence[int], quick: bool, results: Path) -> dict[str, Any]:
    params = inspect.signature(fn).parameters
    offered: dict[str, Any] = {
        "seeds": list(seeds),
        "quick": quick,
        "results_dir": results.parent / "hooks",
        "out_dir": results.parent / "hooks",
    }
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return {k: v for k, v in offered.items() if k != "out_dir"}
    return {k: v for k, v in offered.items() if k in params}


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


def run_hook(
    key: str, *, seeds: Sequence[int], quick: bool, results: Path, docs_dir: Path | None = None
) -> HookSection:
    """Run the benchmark module behind ``key`` if it is importable; never raises."""
    module_name, title = HOOKS[key]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = f"Not run: `{module_name}` is not importable here ({exc}); its branch is not merged."
        print(f"skipping {key}: {msg}")
        return HookSection(key, title, msg + "\n")
    fn = getattr(module, "run", None)
    if not callable(fn):
        return HookSection(key, title, f"Not run: `{module_name}` has no `run()`.\n")
    try:
        result = fn(**_call_kwargs(fn, seeds, quick, results))
    except Exception:  # a broken sibling benchmark must not lose the planner report
        logger.exception("benchmark hook %s failed", key)
        tail = traceback.format_exc().strip().splitlines()[-1]
        return HookSection(key, title, f"Failed: `{module_name}.run()` raised `{tail}`.\n")
    text, targets = to_markdown(result, docs_dir)
    if isinstance(result, Mapping) and result.get("title"):
        title = str(result["title"])
    return HookSection(key, title, text, targets, ran=True)
