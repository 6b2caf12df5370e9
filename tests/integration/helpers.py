"""Helpers shared by the integration tests: campaign files and store queries."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from controller.store import make_engine, session_factory, transaction
from models.status import ExperimentStatus
from models.tables import EventRow, ExperimentRow, SampleRow, StepRow
from sim.campaign_toml import problem_toml


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
    faults: str = "",
    timeout_s: float | None = None,
    extra: str = "",
) -> Path:
    """Write a Branin campaign on simulated stations; returns its path.

    With ``address`` the campaign names one instrument by address only (a server started
    elsewhere, e.g. by :func:`branin_servers`) instead of asking for simulated ones.
    ``faults`` is the body of each simulated station's ``faults`` table (its seed is the
    station's number), ``timeout_s`` each station's action timeout, ``extra`` more TOML
    tables appended to the file.
    """
    if address is not None:
        inst = f"""
[[instruments]]
name = "station-1"
kind = "station"
address = "{address}"
"""
    else:
        inst = _simulated_tables(instruments, duration_s, noise_std, None, faults, timeout_s)
    path.write_text(
        f"""
[campaign]
name = "{name}"
seed = 7

{problem_toml("branin", bounds={"x1": x1_bounds})}[[workflow]]
kind = "station"
action = "measure"
{inst}
[planner]
name = "{planner}"
options = {planner_options}

[budget]
max_experiments = {budget}
max_failures = {budget * 10}
{extra}
"""
    )
    return path


def _simulated_tables(
    n: int,
    duration_s: float,
    noise_std: float,
    address: str | None = None,
    faults: str = "",
    timeout_s: float | None = None,
) -> str:
    out = ""
    for i in range(n):
        addr = f'address = "{address}"\n' if address else ""
        if timeout_s is not None:
            addr += f"timeout_s = {timeout_s}\n"
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
        if faults:
            out += f"[instruments.simulated.faults]\nseed = {i + 1}\n{faults}\n"
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


def check_history(
    db_url: str, snapshots: list[list[dict[str, Any]]], journal_dir: Path, world: str
) -> dict[str, int]:
    """Assert that a campaign killed and restarted lost nothing and duplicated nothing.

    Args:
        db_url: The campaign's store.
        snapshots: The experiments read from the store just before each kill.
        journal_dir: Where the simulated servers journalled the actions they started.
        world: The simulated world, to check measured values against its truth.

    Returns:
        Figures: experiments, lost (must be 0), duplicated starts (must be 0), re-runs.
    """
    from sim.worlds import get_world

    rows = experiments(db_url)
    by_id = {r["id"]: r for r in rows}
    # Nothing recorded before a kill is lost; what was complete stays exactly as it was.
    lost = 0
    for snap in snapshots:
        for r in snap:
            if r["id"] not in by_id:
                lost += 1
            elif r["status"] == ExperimentStatus.COMPLETED:
                assert by_id[r["id"]] == r
    assert lost == 0
    # No two experiments came from the same proposal (nothing was proposed twice).
    keys = [(r["decision_id"], r["proposal_index"]) for r in rows]
    assert len(keys) == len(set(keys))
    # Every request id is unique in the store. The servers journal each action when it
    # starts: no request id started twice, and where one step of an experiment started
    # under several request ids, every later attempt is flagged as a re-run.
    request_ids = [s["request_id"] for r in rows for s in r["steps"]]
    assert len(request_ids) == len(set(request_ids))
    lines: list[dict[str, Any]] = []
    for f in journal_dir.glob("*.jsonl"):
        if not f.name.endswith(".faults.jsonl"):
            lines += journal(f)
    started = [e["request_id"] for e in lines if e["state"] == "running"]
    duplicated = len(started) - len(set(started))
    assert duplicated == 0
    truth = get_world(world)
    for r in rows:
        for index in {s["index"] for s in r["steps"]}:
            ran = [s for s in r["steps"] if s["index"] == index and s["request_id"] in started]
            assert all(s["rerun"] for s in ran[1:]), r
        if r["status"] == ExperimentStatus.COMPLETED:
            expected = truth.evaluate_true(r["parameters"])["y"]
            assert r["measurements"]["y"] == pytest.approx(expected, abs=1e-12)
    reruns = sum(s["rerun"] for r in rows for s in r["steps"])
    assert event_kinds(db_url).count("step.rerun") == reruns
    return {"experiments": len(rows), "lost": lost, "duplicated": duplicated, "reruns": reruns}


def record_figures(name: str, figures: dict[str, Any]) -> None:
    """Append a test's reliability figures to ``$SDLAB_FIGURES`` (a JSON-lines file), if set.

    ``benchmarks/reliability.py`` runs the reliability tests with it set and prints the table
    that ``docs/reliability.md`` quotes.
    """
    target = os.environ.get("SDLAB_FIGURES")
    if target:
        with open(target, "a", encoding="utf-8") as f:
            f.write(json.dumps({"test": name, **figures}) + "\n")


def check_samples(db_url: str, containers: int | None = None) -> int:
    """Assert that every experiment's sample was tracked through kills and restarts.

    Every experiment that ran a step has one sample; a COMPLETED experiment's sample is
    MEASURED and back in storage, none is left in use; each ``sample.moved`` event starts
    where the sample's previous move ended; and, with ``containers`` units, no container
    ever held two samples at once and never more than ``containers`` were in use.

    Returns:
        The number of sample moves.
    """
    engine = make_engine(db_url)
    try:
        with transaction(session_factory(engine)) as s:
            samples = {r.experiment_id: r for r in s.scalars(select(SampleRow))}
            exps = list(s.scalars(select(ExperimentRow).order_by(ExperimentRow.id)))
            moves = list(
                s.scalars(
                    select(EventRow).where(EventRow.kind == "sample.moved").order_by(EventRow.id)
                )
            )
            for e in exps:
                if not e.steps:
                    assert e.id not in samples
                    continue
                sample = samples[e.id]
                assert sample.location == "storage", (e.id, sample.location)
                if e.status == ExperimentStatus.COMPLETED:
                    assert sample.state == "MEASURED"
            where: dict[int, str] = {}
            holder: dict[str, int] = {}
            for ev in moves:
                exp, data = ev.experiment_id, ev.data
                assert exp is not None
                if data.get("created"):
                    assert exp not in where
                    assert holder.get(data["label"], exp) == exp, ev.message
                    holder[data["label"]] = exp
                else:
                    assert where[exp] == data["from"], ev.message
                where[exp] = data["to"]
                if data["to"] == "storage":
                    holder.pop(data["label"], None)
                if containers is not None:
                    assert len(holder) <= containers
            return len(moves)
    finally:
        engine.dispose()
