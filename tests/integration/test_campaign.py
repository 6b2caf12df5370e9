"""A whole campaign on the real stack: Ray actors, ZeroMQ servers in their own processes,
SQLite. Values are checked against the simulated world's noise-free truth."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from controller.runner import RunOptions, run
from models.status import ExperimentStatus, StepStatus
from sim.worlds import get_world
from tests.integration.helpers import branin_campaign, event_kinds, experiments, journal

pytestmark = pytest.mark.usefixtures("ray_address")


def _run(path: Path, db: str, **kw: object) -> tuple[int, str]:
    console = Console(record=True, width=120)
    code = run(path, RunOptions(db_url=db, progress=False, **kw), console)  # type: ignore[arg-type]
    return code, console.export_text()


def test_campaign_reaches_budget_records_truth_and_resumes(tmp_path: Path) -> None:
    path = branin_campaign(tmp_path / "c.toml", budget=8, instruments=2)
    db = f"sqlite:///{tmp_path / 'c.db'}"

    code, out = _run(path, db)

    assert code == 0, out
    rows = experiments(db)
    assert [r["status"] for r in rows] == [ExperimentStatus.COMPLETED] * 8
    world = get_world("branin")
    for r in rows:
        assert r["decision_id"] is not None
        (step,) = r["steps"]
        assert step["status"] == StepStatus.COMPLETED
        assert step["request_id"].endswith(f"-{r['id']}-0-1")
        truth = world.evaluate_true(r["parameters"])["y"]
        assert r["measurements"]["y"] == pytest.approx(truth, abs=1e-12)
    assert {s["instrument"] for r in rows for s in r["steps"]} == {"station-1", "station-2"}
    assert "campaign.created" in event_kinds(db)

    # The same command again: the campaign is finished, nothing new is run.
    code, out = _run(path, db)
    assert code == 0
    assert "finished" in out
    assert len(experiments(db)) == 8

    # A larger budget continues it; earlier rows are untouched.
    code, _ = _run(path, db, budget=11)
    assert code == 0
    after = experiments(db)
    assert len(after) == 11
    assert after[:8] == rows
    assert all(r["status"] == ExperimentStatus.COMPLETED for r in after)


def test_safety_gate_refuses_points_outside_instrument_limits(tmp_path: Path) -> None:
    # The campaign allows x1 down to -10, the instrument declares -5: the random planner
    # proposes points it must not send.
    path = branin_campaign(
        tmp_path / "c.toml", planner="random", budget=10, instruments=1, x1_bounds=(-10.0, 10.0)
    )
    db = f"sqlite:///{tmp_path / 'c.db'}"
    journals = tmp_path / "journal"

    code, out = _run(path, db, journal_dir=journals)

    assert code == 0, out
    rows = experiments(db)
    refused = [r for r in rows if r["status"] == ExperimentStatus.ABANDONED]
    assert refused, "the random planner should have proposed some x1 < -5"
    assert all(r["parameters"]["x1"] < -5 and not r["steps"] for r in refused)
    assert event_kinds(db).count("safety.refused") == len(refused)
    sent = [req for req in journal(journals / "station-1.jsonl") if req["state"] == "running"]
    assert len(sent) == 10
    assert min(req["parameters"]["x1"] for req in sent) >= -5.0


@pytest.mark.slow
def test_bayesian_optimisation_beats_sobol_on_noise_free_branin(tmp_path: Path) -> None:
    best = {}
    for planner, options in (("sobol", "{}"), ("qlognei", "{ initial_points = 5 }")):
        path = branin_campaign(
            tmp_path / f"{planner}.toml",
            name=f"branin-{planner}",
            planner=planner,
            planner_options=options,
            # 25: with 5 initial points, qlognei's in-process runs on noise-free Branin
            # (seeds 0-7, both GP priors) all reach -1.0 by 25 experiments; by 20, two of
            # eight runs with the default Gamma priors had not (-1.17, -1.97)
            budget=25,
            instruments=1,
        )
        db = f"sqlite:///{tmp_path / f'{planner}.db'}"
        code, out = _run(path, db)
        assert code == 0, out
        best[planner] = max(r["measurements"]["y"] for r in experiments(db))
    # Branin's maximum (negated) is -0.397887; Sobol's 25 points stay far from it.
    assert best["qlognei"] > best["sobol"]
    assert best["qlognei"] > -1.0


def test_the_same_campaign_runs_on_sqlite_and_postgresql(tmp_path: Path, db_url: str) -> None:
    path = branin_campaign(tmp_path / "c.toml", budget=6, instruments=2, duration_s=0.01)

    code, out = _run(path, db_url)

    assert code == 0, out
    rows = experiments(db_url)
    assert [r["status"] for r in rows] == [ExperimentStatus.COMPLETED] * 6
    world = get_world("branin")
    for r in rows:
        truth = world.evaluate_true(r["parameters"])["y"]
        assert r["measurements"]["y"] == pytest.approx(truth, abs=1e-12)
