"""The end-of-run summary's grouped rows (``[report] group_by`` / ``success_at``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from rich.console import Console

from controller.report import render_groups, render_summary, summarize
from controller.store import create_campaign, make_engine, migrate, session_factory, transaction
from controller.store.repo import add_experiment, add_measurements, add_step, set_experiment_status
from controller.store.timing import timing
from models.campaign import CampaignSpec
from models.records import Measurement
from models.status import ExperimentStatus, StepStatus
from models.tables import DecisionRow, ExperimentRow, StepRow


def spec(report: dict[str, Any], direction: str = "maximize") -> CampaignSpec:
    return CampaignSpec.model_validate(
        {
            "campaign": {"name": "grouped"},
            "parameters": [
                {"name": "target", "type": "categorical", "choices": ["A", "B", "C"]},
                {"name": "t", "type": "continuous", "lower": 0, "upper": 1},
            ],
            "objectives": [{"name": "y", "direction": direction}],
            "workflow": [{"kind": "station", "action": "measure"}],
            "instruments": [{"name": "s1", "kind": "station", "address": "tcp://127.0.0.1:1"}],
            "planner": {"name": "random"},
            "budget": {"max_experiments": 10},
            "report": report,
        }
    )


def run(tmp_path: Path, campaign: CampaignSpec, results: list[tuple[str, float | None]]) -> Any:
    """Store one experiment per ``(target, y)``; ``y = None`` is a failed experiment."""
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    engine = make_engine(url)
    migrate(engine)
    factory = session_factory(engine)
    with transaction(factory) as s:
        row = create_campaign(s, campaign, seed=0, max_experiments=10)
        for k, (target, y) in enumerate(results):
            e = add_experiment(s, row.id, {"target": target, "t": 0.5})
            for status in (ExperimentStatus.QUEUED, ExperimentStatus.RUNNING):
                set_experiment_status(s, e, status)
            step = add_step(
                s, e, index=0, kind="station", action="measure", parameters={}, request_id=str(k)
            )
            if y is None:
                set_experiment_status(s, e, ExperimentStatus.FAILED, reason="broke")
            else:
                add_measurements(s, step, [Measurement(name="y", value=y)])
                set_experiment_status(s, e, ExperimentStatus.COMPLETED)
        # proposed but never run: not an attempt
        add_experiment(s, row.id, {"target": "C", "t": 0.1})
    with transaction(factory) as s:
        summary = summarize(s, "grouped", url, None)
    engine.dispose()
    return summary


def test_one_row_per_value_with_attempts_best_and_success(tmp_path: Path) -> None:
    results = [("A", 0.2), ("B", None), ("A", 0.7), ("B", 0.4), ("A", 0.5)]
    summary = run(tmp_path, spec({"group_by": "target", "success_at": 0.5}), results)
    rows = {g.value: g for g in summary.groups}
    assert set(rows) == {"A", "B"}  # C was never run
    assert (rows["A"].attempts, rows["A"].completed, rows["A"].best) == (3, 3, 0.7)
    assert (rows["B"].attempts, rows["B"].completed, rows["B"].best) == (2, 1, 0.4)
    assert rows["A"].success is True
    assert rows["B"].success is False
    console = Console(width=120, record=True)
    table = render_groups(summary)
    assert table is not None
    console.print(table)
    assert "1 of 2 succeeded" in console.export_text()


def test_minimising_objectives_succeed_at_or_below(tmp_path: Path) -> None:
    results = [("A", 0.2), ("B", 0.6)]
    summary = run(tmp_path, spec({"group_by": "target", "success_at": 0.5}, "minimize"), results)
    rows = {g.value: g for g in summary.groups}
    assert rows["A"].success is True
    assert rows["B"].success is False


def test_without_group_by_there_are_no_rows(tmp_path: Path) -> None:
    summary = run(tmp_path, spec({}), [("A", 0.2)])
    assert summary.groups == []
    assert render_groups(summary) is None


def test_an_unknown_group_parameter_is_named() -> None:
    with pytest.raises(ValidationError, match=r"report\.group_by"):
        spec({"group_by": "precursors"})


def test_the_summary_says_where_the_time_went(tmp_path: Path) -> None:
    """Wall time, planning time and instrument time are told apart (a pool run's 40 s
    experiments once read as 0.028 s, the instrument's share alone)."""
    url = f"sqlite:///{tmp_path / 't.sqlite'}"
    engine = make_engine(url)
    migrate(engine)
    factory = session_factory(engine)
    t0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    with transaction(factory) as s:
        row = create_campaign(s, spec({}), seed=0, max_experiments=10)
        for k in range(4):  # each: 9 s of planning, then 1 s on the instrument
            start = t0 + timedelta(seconds=10 * k)
            d = DecisionRow(
                campaign_id=row.id,
                planner="random",
                version="1",
                seed=k,
                n_train=k,
                n_pending=0,
                n_proposed=1,
                candidate_scores=[],
                details={},
                seconds=9.0 + k,
                created_at=start + timedelta(seconds=9),
            )
            s.add(d)
            s.flush()
            e = ExperimentRow(
                campaign_id=row.id,
                decision_id=d.id,
                status=ExperimentStatus.COMPLETED,
                parameters={"target": "A", "t": 0.5},
                created_at=start + timedelta(seconds=9),
                finished_at=start + timedelta(seconds=10),
            )
            s.add(e)
            s.flush()
            s.add(
                StepRow(
                    experiment_id=e.id,
                    index=0,
                    kind="station",
                    action="measure",
                    instrument="s1",
                    request_id=f"r{k}",
                    status=StepStatus.COMPLETED,
                    parameters={},
                    started_at=start + timedelta(seconds=9.2),
                    finished_at=start + timedelta(seconds=9.7),
                )
            )
    with transaction(factory) as s:
        tm = timing(s, row.id)
        summary = summarize(s, "grouped", url, run_seconds=41.0)
    engine.dispose()
    # first decision at 9 s, last result at 40 s: 31 s over 4 experiments
    assert tm.wall_s_per_experiment == pytest.approx(31 / 4)
    assert tm.planning_s_per_decision == pytest.approx(10.5)
    assert tm.planning_s_total == pytest.approx(42.0)
    assert tm.decisions == 4
    assert tm.instrument_s_per_experiment == pytest.approx(0.5)
    assert tm.finished == 4
    assert summary is not None
    console = Console(width=120, record=True)
    console.print(render_summary(summary))
    text = " ".join(console.export_text().split())
    assert "wall time per experiment │ 7.750 s" in text
    assert "planning per decision" in text
    assert "10.500 s (median; 42.0 s over 4 decisions)" in text
    assert "instrument time per experiment │ 0.500 s (median)" in text
