"""What the command line prints: the end-of-run summary, ``status`` and ``export``."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.store import count_by_status, export_rows, get_campaign, list_campaigns
from controller.store.queries import cost_spent
from controller.store.timing import Timing, timing
from models.campaign import CampaignSpec
from models.status import ExperimentStatus
from models.tables import ExperimentRow


@dataclass
class GroupRow:
    """One value of the ``[report] group_by`` parameter in the summary.

    Attributes:
        value: The parameter's value.
        attempts: Experiments with it that ran (completed, failed or interrupted).
        completed: Of those, the completed ones.
        best: Best value of the first objective among the completed ones, if any.
        best_experiment: The experiment that measured ``best``.
        success: Whether ``best`` reaches ``[report] success_at`` (``None``: not asked).
    """

    value: str
    attempts: int
    completed: int
    best: float | None
    best_experiment: int | None
    success: bool | None


@dataclass
class Summary:
    """The numbers shown when a run ends."""

    campaign: str
    status: str
    budget: int
    counts: dict[str, int]
    best: list[tuple[str, str, float, dict[str, Any], int]] = field(default_factory=list)
    seconds_per_experiment: float | None = None
    timing: Timing | None = None
    cost_spent: float = 0.0
    max_cost: float | None = None
    run_seconds: float | None = None
    database: str = ""
    group_by: str | None = None
    groups: list[GroupRow] = field(default_factory=list)


def summarize(s: Session, name: str, db_url: str, run_seconds: float | None) -> Summary | None:
    """Collect the summary of campaign ``name`` (``None`` if it does not exist)."""
    row = get_campaign(s, name)
    if row is None:
        return None
    spec = CampaignSpec.model_validate(row.spec)
    counts = {k.value: v for k, v in count_by_status(s, row.id).items()}
    done = s.scalars(
        select(ExperimentRow)
        .where(ExperimentRow.campaign_id == row.id)
        .where(ExperimentRow.status == ExperimentStatus.COMPLETED)
    ).all()
    best: list[tuple[str, str, float, dict[str, Any], int]] = []
    for obj in spec.objectives:
        if obj.is_constraint:
            continue
        scored = [
            (m.value, e)
            for e in done
            for m in e.measurements
            if m.name == obj.name and m.value is not None
        ]
        if scored:
            value, exp = max(scored, key=lambda t: obj.utility(t[0]))
            how = f"target {obj.target:g}" if obj.target is not None else obj.direction
            best.append((obj.name, how, value, dict(exp.parameters), exp.id))
    durations = [
        (e.finished_at - e.created_at).total_seconds() for e in done if e.finished_at is not None
    ]
    groups = _groups(s, row.id, spec) if spec.report.group_by is not None else []
    return Summary(
        campaign=row.name,
        status=row.status.value,
        budget=row.max_experiments,
        counts=counts,
        best=best,
        seconds_per_experiment=statistics.median(durations) if durations else None,
        timing=timing(s, row.id),
        cost_spent=cost_spent(s, row.id),
        max_cost=spec.budget.max_cost,
        run_seconds=run_seconds,
        database=_redact(db_url),
        group_by=spec.report.group_by,
        groups=groups,
    )


_RAN = (ExperimentStatus.COMPLETED, ExperimentStatus.FAILED, ExperimentStatus.INTERRUPTED)


def _groups(s: Session, campaign_id: int, spec: CampaignSpec) -> list[GroupRow]:
    """One row per value of ``spec.report.group_by`` among the experiments that ran."""
    param = spec.report.group_by
    assert param is not None
    objective = next(o for o in spec.objectives if not o.is_constraint)
    ran = s.scalars(
        select(ExperimentRow)
        .where(ExperimentRow.campaign_id == campaign_id)
        .where(ExperimentRow.status.in_(_RAN))
        .order_by(ExperimentRow.id)
    ).all()
    by_value: dict[str, list[ExperimentRow]] = {}
    for e in ran:
        by_value.setdefault(str(e.parameters.get(param)), []).append(e)
    rows: list[GroupRow] = []
    for value, exps in by_value.items():
        scored = [
            (m.value, e.id)
            for e in exps
            if e.status == ExperimentStatus.COMPLETED
            for m in e.measurements
            if m.name == objective.name and m.value is not None
        ]
        best, best_id = (
            max(scored, key=lambda t: objective.utility(t[0])) if scored else (None, None)
        )
        success = None
        if spec.report.success_at is not None:
            success = best is not None and objective.utility(best) >= objective.utility(
                spec.report.success_at
            )
        completed = sum(e.status == ExperimentStatus.COMPLETED for e in exps)
        rows.append(GroupRow(value, len(exps), completed, best, best_id, success))
    return rows


def render_groups(summary: Summary) -> Table | None:
    """The grouped rows of the summary as a table (``None`` when the campaign asks none)."""
    if summary.group_by is None:
        return None
    made = [g for g in summary.groups if g.success]
    asked = any(g.success is not None for g in summary.groups)
    title = f"by {summary.group_by}"
    if asked:
        title += f": {len(made)} of {len(summary.groups)} succeeded"
    t = Table(title=title, title_justify="left")
    t.add_column(summary.group_by)
    t.add_column("attempts", justify="right")
    t.add_column("completed", justify="right")
    t.add_column("best", justify="right")
    t.add_column("experiment", justify="right")
    if asked:
        t.add_column("success")
    for g in summary.groups:
        cells = [
            g.value,
            str(g.attempts),
            str(g.completed),
            "-" if g.best is None else f"{g.best:.4g}",
            "-" if g.best_experiment is None else str(g.best_experiment),
        ]
        if asked:
            cells.append("yes" if g.success else "no")
        t.add_row(*cells)
    return t


def _redact(url: str) -> str:
    """The URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url


def render_summary(summary: Summary) -> Table:
    """A table for the terminal."""
    t = Table(title=f"campaign {summary.campaign}", show_header=False, title_justify="left")
    t.add_column("what", style="bold")
    t.add_column("value")
    t.add_row("status", summary.status)
    c = summary.counts
    t.add_row(
        "experiments",
        f"{c.get('COMPLETED', 0)} of {summary.budget} done, {c.get('FAILED', 0)} failed, "
        f"{c.get('ABANDONED', 0)} abandoned, {c.get('INTERRUPTED', 0)} interrupted",
    )
    if summary.cost_spent or summary.max_cost is not None:
        t.add_row("cost spent", _cost_text(summary.cost_spent, summary.max_cost))
    for name, direction, value, params, exp_id in summary.best:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())
        label = direction if direction.startswith("target") else direction[:3]
        t.add_row(f"best {name} ({label})", f"{value:.6g} (experiment {exp_id})")
        t.add_row("  at", shown)
    tm = summary.timing
    if tm is not None and tm.wall_s_per_experiment is not None:
        t.add_row("wall time per experiment", f"{tm.wall_s_per_experiment:.3f} s")
    if tm is not None and tm.planning_s_per_decision is not None:
        t.add_row(
            "planning per decision",
            f"{tm.planning_s_per_decision:.3f} s (median; {tm.planning_s_total:.1f} s over "
            f"{tm.decisions} decisions)",
        )
    if tm is not None and tm.instrument_s_per_experiment is not None:
        t.add_row(
            "instrument time per experiment", f"{tm.instrument_s_per_experiment:.3f} s (median)"
        )
    if summary.seconds_per_experiment is not None:
        t.add_row(
            "proposed to result", f"{summary.seconds_per_experiment:.3f} s (median per experiment)"
        )
    if summary.run_seconds is not None:
        t.add_row("this run took", f"{summary.run_seconds:.1f} s")
    t.add_row("database", summary.database)
    return t


def _max_cost(spec: Any) -> float | None:
    budget = spec.get("budget") if isinstance(spec, dict) else None
    value = budget.get("max_cost") if isinstance(budget, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def _cost_text(spent: float, max_cost: float | None) -> str:
    return f"{spent:.6g}" if max_cost is None else f"{spent:.6g} / {max_cost:.6g}"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def status_table(s: Session) -> Table:
    """``sdlab status``: one row per campaign with its experiment counts per status."""
    t = Table(title="campaigns", title_justify="left")
    t.add_column("campaign")
    t.add_column("status")
    t.add_column("done / budget", justify="right")
    t.add_column("experiments by status")
    t.add_column("cost spent", justify="right")
    t.add_column("time per experiment")
    for row in list_campaigns(s):
        counts = count_by_status(s, row.id)
        shown = ", ".join(f"{st.value} {n}" for st, n in counts.items() if n)
        done = counts.get(ExperimentStatus.COMPLETED, 0)
        t.add_row(
            row.name,
            row.status.value,
            f"{done} / {row.max_experiments}",
            shown or "none",
            _cost_text(cost_spent(s, row.id), _max_cost(row.spec)),
            timing(s, row.id).describe(),
        )
    return t


def export_text(s: Session, campaign: str | None, fmt: str) -> str:
    """``sdlab export``: every experiment as CSV (one header row) or a JSON array."""
    rows = export_rows(s, campaign)
    if fmt == "json":
        return json.dumps(rows, indent=2, default=str) + "\n"
    return _csv(rows)


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    columns: list[str] = []
    for r in rows:
        for k in r:
            if k not in columns:
                columns.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()
