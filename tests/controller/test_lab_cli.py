"""``sdlab lab``: apply (exit 2 naming file and key path), show, priority, instrument; and
a dashboard upload of a campaign that names lab instruments."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from controller.cli import cli
from controller.store import create_campaign, make_engine, migrate, session_factory, transaction
from controller.store.lab import apply_lab
from models.lab import load_lab
from models.status import LabInstrumentState
from models.tables import CampaignRow, LabInstrumentRow
from tests.controller.api_store import bearer
from tests.controller.conftest import Dashboard
from tests.controller.test_lab_grants import campaign_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lab" / "lab.toml"


def invoke(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.stdout, res.stderr


def test_apply_records_the_example_lab_once_and_show_prints_it(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    code, out, _ = invoke("lab", "apply", str(EXAMPLE), "--db", db)
    assert code == 0
    assert "lab demo-lab created" in out
    assert "unit rack-A4 (crucible-rack) added" in out
    code, out, _ = invoke("lab", "apply", str(EXAMPLE), "--db", db)
    assert code == 0
    assert "nothing changed" in out
    code, out, _ = invoke("lab", "show", "demo-lab", "--db", db)
    assert code == 0
    assert "station-2 [station] tcp://127.0.0.1:5862 via bench-pc: in service" in out
    assert "arm: arm-1, arm-2" in out


def test_a_broken_lab_file_exits_2_naming_file_and_key_path(tmp_path: Path) -> None:
    bad = tmp_path / "lab.toml"
    bad.write_text(EXAMPLE.read_text().replace("capacity = 2", "capacity = -2"))
    db = tmp_path / "s.db"
    code, _, err = invoke("lab", "apply", str(bad), "--db", f"sqlite:///{db}")
    assert code == 2
    assert str(bad) in err
    assert "resources[0].capacity" in err
    assert not db.exists()


def test_priority_and_service_state_are_recorded_for_every_campaign(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert invoke("lab", "apply", str(EXAMPLE), "--db", db)[0] == 0
    engine = make_engine(db)
    migrate(engine)
    factory = session_factory(engine)
    with transaction(factory) as s:
        create_campaign(s, campaign_spec("A"), seed=0, max_experiments=3)
    code, out, _ = invoke("lab", "priority", "A", "7", "--db", db)
    assert (code, out.strip()) == (0, "campaign A: priority 7")
    assert invoke("lab", "priority", "nope", "1", "--db", db)[0] == 1
    code, _, _ = invoke(
        "lab", "instrument", "demo-lab", "station-3", "out-of-service", "--reason", "cleaning",
        "--db", db,
    )  # fmt: skip
    assert code == 0
    code, out, _ = invoke("lab", "show", "demo-lab", "--db", db)
    assert "station-3 [station] tcp://127.0.0.1:5863 via bench-pc: out of service (cleaning)" in out
    with transaction(factory) as s:
        assert s.scalars(select(CampaignRow.priority)).one() == 7
        row = s.scalars(select(LabInstrumentRow).where(LabInstrumentRow.name == "station-3")).one()
        assert (row.state, row.reason, row.changed_by) == (
            LabInstrumentState.OUT_OF_SERVICE,
            "cleaning",
            "cli",
        )
    engine.dispose()


@pytest.mark.slow  # the upload check builds the campaign's planner (13-16 s here)
def test_the_dashboard_accepts_an_upload_naming_lab_instruments(dash: Dashboard) -> None:
    campaign = (EXAMPLE.parent / "campaign-a.toml").read_bytes()
    headers = bearer(dash.tokens["admin"])
    res = dash.client.post("/api/campaigns", headers=headers, files={"file": ("a.toml", campaign)})
    assert res.status_code == 422
    assert res.json()["detail"]["problems"][0]["key"] == "lab.name"
    with transaction(dash.factory) as s:
        apply_lab(s, load_lab(EXAMPLE))
    res = dash.client.post("/api/campaigns", headers=headers, files={"file": ("a.toml", campaign)})
    assert res.status_code == 201, res.text
    with transaction(dash.factory) as s:
        row = s.scalars(select(CampaignRow).where(CampaignRow.name == "lab-demo-a")).one()
        names = [i["name"] for i in row.spec["instruments"]]
    assert names == ["station-1", "station-2", "station-3"]
