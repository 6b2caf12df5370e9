"""A screening campaign over a candidate list through the real stack: Ray actors, two
simulated formula-energy stations over ZeroMQ, SQLite. The list is the first 300 rows of
examples/data/oxide-candidates.csv plus one unparsable row; the truth is the world's."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import select

from controller.runner import RunOptions, run
from controller.store import make_engine, session_factory, transaction
from models.status import ExperimentStatus
from models.tables import DecisionRow, ExperimentRow
from sim.materials.formula_world import formation_model
from tests.integration.helpers import experiments

pytestmark = [pytest.mark.usefixtures("ray_address"), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 15


def test_screening_campaign_over_a_list_end_to_end(tmp_path: Path) -> None:
    lines = (ROOT / "examples/data/oxide-candidates.csv").read_text().splitlines()
    listed = tmp_path / "list.csv"
    listed.write_text("\n".join([*lines[:301], "bad-row,Qq2O"]) + "\n")
    text = (ROOT / "examples/screening.toml").read_text()
    text = text.replace('"examples/data/oxide-candidates.csv"', f'"{listed}"')
    text = text.replace('".sdlab/feature-cache"', f'"{tmp_path / "cache"}"')
    text = text.replace('descriptor = "magpie"', 'descriptor = "fractions"')
    text = text.replace("initial_points = 10", "initial_points = 5")
    text = text.replace("max_experiments = 40", f"max_experiments = {BUDGET}")
    path = tmp_path / "screening.toml"
    path.write_text(text)
    db = f"sqlite:///{tmp_path / 's.db'}"
    console = Console(record=True, width=120)

    code = run(path, RunOptions(db_url=db, progress=False), console)

    assert code == 0, console.export_text()
    rows = experiments(db)
    assert [r["status"] for r in rows] == [ExperimentStatus.COMPLETED] * BUDGET
    by_id = dict(line.split(",") for line in lines[1:301])
    model = formation_model()
    ids = [r["parameters"]["candidate"] for r in rows]
    assert len(set(ids)) == BUDGET
    for r in rows:
        cid, formula = r["parameters"]["candidate"], r["parameters"]["formula"]
        assert by_id[cid] == formula
        truth = model.energy(formula)
        assert r["measurements"]["formation_energy_ev_per_atom"] == pytest.approx(truth, abs=0.06)
    engine = make_engine(db)
    try:
        with transaction(session_factory(engine)) as s:
            decisions = {d.id: d for d in s.scalars(select(DecisionRow))}
            for e in s.scalars(select(ExperimentRow)):
                assert e.decision_id is not None
                info = decisions[e.decision_id].details["proposals"][e.proposal_index]
                assert info["id"] == e.parameters["candidate"]
                assert info["formula"] == e.parameters["formula"]
            phases = {d.details["phase"] for d in decisions.values()}
            bad = {tuple(d.details["bad_rows"]) for d in decisions.values()}
    finally:
        engine.dispose()
    assert phases == {"initial_design", "screening"}
    assert bad == {("row 302: formula 'Qq2O': not elements: Qq",)}
