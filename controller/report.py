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
from models.campaign import CampaignSpec
from models.status import ExperimentStatus
from models.tables import ExperimentRow


@dataclass
class Summary:
    """The numbers shown when a run ends."""

    campaign: str
    status: str
    budget: int
    counts: dict[str, int]
    best: list[tuple[str, str, float, dict[str, Any], int]] = field(default_factory=list)
    seconds_per_experiment: float | None = None
    cost_spent: float = 0.0
    max_cost: float | None = None
    run_seconds: float | None = None
    database: str = ""


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
    return Summary(
        campaign=row.name,
        status=row.status.value,
        budget=row.max_experiments,
        counts=counts,
        best=best,
        seconds_per_experiment=statistics.median(durations) if durations else None,
        cost_spent=cost_spent(s, row.id),
        max_cost=spec.budget.max_cost,
        run_seconds=run_seconds,
        database=_redact(db_url),
    )


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
    if summary.seconds_per_experiment is not None:
        t.add_row("time per experiment", f"{summary.seconds_per_experiment:.3f} s (median)")
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
