"""A campaign whose two steps share one robot arm and whose samples sit in three crucibles,
on the real stack: Ray, simulated instrument servers in their own processes, SQLite."""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import select

from controller.runner import RunOptions, run
from controller.store import make_engine, session_factory, transaction
from models.status import ExperimentStatus, SampleState, StepStatus
from models.tables import EventRow, ExperimentRow, SampleRow, StepRow
from sim.worlds import get_world

pytestmark = pytest.mark.usefixtures("ray_address")


def _station(name: str, kind: str, seed: int, output: str) -> str:
    return f"""
[[instruments]]
name = "{name}"
kind = "{kind}"
[instruments.simulated]
world = "branin"
duration_s = 0.15
seed = {seed}
options = {{ output = "{output}" }}
"""


def campaign(path: Path) -> Path:
    stations = "".join(
        [
            _station("prep-1", "prep", 1, "prep_y"),
            _station("prep-2", "prep", 2, "prep_y"),
            _station("station-1", "station", 3, "y"),
            _station("station-2", "station", 4, "y"),
        ]
    )
    path.write_text(
        f"""
sample_container = "crucible"

[campaign]
name = "shared-arm"
seed = 7

[[parameters]]
name = "x1"
type = "continuous"
lower = -5.0
upper = 10.0

[[parameters]]
name = "x2"
type = "continuous"
lower = 0.0
upper = 15.0

[[objectives]]
name = "y"
direction = "maximize"

[[resources]]
name = "robot-arm"
capacity = 1

[[resources]]
name = "crucible"
capacity = 3

[[workflow]]
kind = "prep"
action = "measure"
needs = ["robot-arm"]

[[workflow]]
kind = "station"
action = "measure"
needs = ["robot-arm"]
{stations}
[planner]
name = "sobol"
prefetch = 3

[budget]
max_experiments = 8
"""
    )
    return path


def _max_overlap(spans: list[tuple[datetime, datetime]]) -> int:
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    return max(itertools.accumulate(d for _, d in edges), default=0)


def test_shared_arm_and_crucibles_are_never_over_capacity(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    console = Console(record=True, width=120)

    code = run(campaign(tmp_path / "c.toml"), RunOptions(db_url=db, progress=False), console)

    assert code == 0, console.export_text()
    world = get_world("branin")
    engine = make_engine(db)
    try:
        with transaction(session_factory(engine)) as s:
            exps = s.scalars(select(ExperimentRow).order_by(ExperimentRow.id)).all()
            assert [e.status for e in exps] == [ExperimentStatus.COMPLETED] * 8
            steps = s.scalars(select(StepRow).order_by(StepRow.id)).all()
            assert {st.status for st in steps} == {StepStatus.COMPLETED}
            # Both steps hold the one robot arm: no two steps of any kind overlapped.
            spans = [(st.sent_at, st.finished_at) for st in steps]
            assert _max_overlap(spans) == 1  # type: ignore[arg-type]
            # Three crucibles: at most three experiments between first step and last.
            lives: dict[int, list[datetime]] = {}
            for st in steps:
                assert st.sent_at is not None
                assert st.finished_at is not None
                lives.setdefault(st.experiment_id, []).extend([st.sent_at, st.finished_at])
            assert _max_overlap([(min(v), max(v)) for v in lives.values()]) <= 3
            samples = {r.experiment_id: r for r in s.scalars(select(SampleRow))}
            moves = s.scalars(
                select(EventRow).where(EventRow.kind == "sample.moved").order_by(EventRow.id)
            ).all()
            for e in exps:
                values = {m.name: m.value for m in e.measurements}
                assert values["y"] == pytest.approx(world.evaluate_true(e.parameters)["y"])
                sample = samples[e.id]
                assert sample.label in {"crucible-1", "crucible-2", "crucible-3"}
                assert (sample.state, sample.location) == (SampleState.MEASURED, "storage")
                path = [ev.data["to"] for ev in moves if ev.experiment_id == e.id]
                assert path == [e.steps[0].instrument, e.steps[1].instrument, "storage"]
                assert e.waiting_for is None
    finally:
        engine.dispose()
