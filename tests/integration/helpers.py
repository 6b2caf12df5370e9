"""Helpers shared by the integration tests: campaign files and store queries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from controller.store import make_engine, session_factory, transaction
from models.status import ExperimentStatus
from models.tables import EventRow, ExperimentRow, StepRow


def branin_campaign(
    path: Path,
    *,
    name: str = "branin-test",
    planner: str = "sobol",
    planner_options: str = "{}",
    budget: int = 8,
    instruments: int = 2,
    duration_s: float = 0.0,
    noise_std: float = 0.0,
    x1_bounds: tuple[float, float] = (-5.0, 10.0),
    address: str | None = None,
) -> Path:
    """Write a Branin campaign on simulated stations; returns its path.

    With ``address`` the campaign names one instrument by address only (a server started
    elsewhere, e.g. by :func:`branin_servers`) instead of asking for simulated ones.
    """
    if address is not None:
        inst = f"""
[[instruments]]
name = "station-1"
kind = "station"
address = "{address}"
"""
    else:
        inst = _simulated_tables(instruments, duration_s, noise_std)
    path.write_text(
        f"""
[campaign]
name = "{name}"
seed = 7

[[parameters]]
name = "x1"
type = "continuous"
lower = {x1_bounds[0]}
upper = {x1_bounds[1]}

[[parameters]]
name = "x2"
type = "continuous"
lower = 0.0
upper = 15.0

[[objectives]]
name = "y"
direction = "maximize"

[[workflow]]
kind = "station"
action = "measure"
{inst}
[planner]
name = "{planner}"
options = {planner_options}

[budget]
max_experiments = {budget}
"""
    )
    return path


def _simulated_tables(
    n: int, duration_s: float, noise_std: float, address: str | None = None
) -> str:
    out = ""
    for i in range(n):
        addr = f'address = "{address}"\n' if address else ""
        out += f"""
[[instruments]]
name = "station-{i + 1}"
kind = "station"
{addr}[instruments.simulated]
world = "branin"
noise_std = {noise_std}
duration_s = {duration_s}
seed = {i + 1}
"""
    return out


def branin_servers(path: Path, address: str, *, duration_s: float = 0.0) -> Path:
    """Write a simulation file serving one Branin station at ``address``."""
    path.write_text(_simulated_tables(1, duration_s, 0.0, address))
    return path


def experiments(db_url: str) -> list[dict[str, Any]]:
    """Every experiment with its steps and measurements, as plain dicts."""
    engine = make_engine(db_url)
    try:
        with transaction(session_factory(engine)) as s:
            out = []
            for e in s.scalars(select(ExperimentRow).order_by(ExperimentRow.id)):
                out.append(
                    {
                        "id": e.id,
                        "status": ExperimentStatus(e.status),
                        "parameters": dict(e.parameters),
                        "decision_id": e.decision_id,
                        "proposal_index": e.proposal_index,
                        "steps": [
                            {
                                "index": st.index,
                                "attempt": st.attempt,
                                "rerun": st.rerun,
                                "request_id": st.request_id,
                                "status": st.status,
                                "instrument": st.instrument,
                            }
                            for st in e.steps
                        ],
                        "measurements": {m.name: m.value for m in e.measurements},
                    }
                )
            return out
    finally:
        engine.dispose()


def event_kinds(db_url: str) -> list[str]:
    """Kinds of every event, in order."""
    engine = make_engine(db_url)
    try:
        with transaction(session_factory(engine)) as s:
            return list(s.scalars(select(EventRow.kind).order_by(EventRow.id)))
    finally:
        engine.dispose()


def steps(db_url: str) -> list[StepRow]:
    """Every step row (detached)."""
    engine = make_engine(db_url)
    try:
        with transaction(session_factory(engine)) as s:
            return list(s.scalars(select(StepRow).order_by(StepRow.id)))
    finally:
        engine.dispose()


def journal(path: Path) -> list[dict[str, Any]]:
    """The terminal request states a simulated server journalled."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
