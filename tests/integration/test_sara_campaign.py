"""examples/sara.toml end to end: Ray, the sara-wafer server in its own process, SQLite.
Values are checked against the sara-anneal world's noise-free truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from sqlalchemy import select

from controller.runner import RunOptions, run
from controller.store import make_engine, session_factory, transaction
from models.status import ExperimentStatus, StepStatus
from models.tables import DecisionRow, MeasurementRow
from sim.sara import SaraWorld
from tests.integration.helpers import experiments

pytestmark = pytest.mark.usefixtures("ray_address")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sara.toml"


@pytest.mark.slow
def test_sara_example_runs_end_to_end(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert "noise_std = 0.01" in text
    path = tmp_path / "sara.toml"
    path.write_text(text.replace("noise_std = 0.01", "noise_std = 0.0"), encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'sara.db'}"
    console = Console(record=True, width=120)

    code = run(path, RunOptions(db_url=db, progress=False, budget=11), console)

    assert code == 0, console.export_text()
    rows = experiments(db)
    assert [r["status"] for r in rows] == [ExperimentStatus.COMPLETED] * 11
    world = SaraWorld()
    for r in rows:
        assert [s["status"] for s in r["steps"]] == [StepStatus.COMPLETED] * 2
        for name, value in world.evaluate_true(r["parameters"]).items():
            assert r["measurements"][name] == pytest.approx(value, abs=1e-12)
    # inner_budget = 8: the first stripe is measured 8 times, then a second stripe is made
    stripes = [(r["parameters"]["tpeak_c"], r["parameters"]["dwell_us"]) for r in rows]
    assert len(set(stripes[:8])) == 1
    assert stripes[8] != stripes[0]
    assert [r["measurements"]["new_stripe"] for r in rows[:9]] == [1.0] + [0.0] * 7 + [1.0]
    engine = make_engine(db)
    try:
        with transaction(session_factory(engine)) as s:
            loops = [
                d.details["loop"] for d in s.scalars(select(DecisionRow).order_by(DecisionRow.id))
            ]
            spectra = list(
                s.scalars(select(MeasurementRow).where(MeasurementRow.name == "spectrum"))
            )
            first = spectra[0]
            arrays = {m.experiment_id: m.array for m in spectra}
    finally:
        engine.dispose()
    assert loops[0] == "outer"
    assert loops.count("outer") == 2
    assert len(arrays) == 11
    assert first.array is not None
    truth = world.spectrum_true(rows[0]["parameters"])
    assert np.array(arrays[rows[0]["id"]]) == pytest.approx(truth, abs=1e-12)
