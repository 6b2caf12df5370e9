"""A campaign through one SiLA 2, one OPC UA, one VISA and one ophyd-async instrument,
and a person (a ``manual`` instrument whose tasks the test answers through the API).

The example's own script (``examples/standards/serve_reference.py --gateway``) starts the
SiLA 2 and OPC UA reference servers and hosts the four generic drivers of its lab file
with sdlab's gateway, in one process; ``sdlab run`` hosts the manual instrument; the
campaign runs through the controller on Ray; every recorded value
is checked against what the reference servers computed, replayed in the order each
instrument ran its steps (its journal).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("sila2")
pytest.importorskip("asyncua")
pytest.importorskip("pyvisa_sim")
pytest.importorskip("ophyd_async")

from fastapi.testclient import TestClient

from controller.api.app import create_app
from controller.runner import RunOptions, run
from models.status import ExperimentStatus, StepStatus
from tests.controller.api_store import bearer, dash_settings, make_users
from tests.instruments.standards.conftest import EXAMPLES, free_port
from tests.integration.helpers import experiments, journal

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_address")]

sys.path.insert(0, str(EXAMPLES))
import opcua_heater  # noqa: E402
import sila2_heater  # noqa: E402


def score(position_mm: float) -> float:
    """What the test, as the person, rates a sample at ``position_mm``."""
    return round(abs(position_mm) * 2.5, 3)


def _person(tmp: Path, db: str, stop: threading.Event, seen: list[int]) -> None:
    """Answer every open task of the manual instrument through the dashboard's API."""
    settings = dash_settings(tmp / "dash", db_url=db)
    app = create_app(settings)
    token = make_users(app.state.factory, settings.kdf_iterations)["operator"]
    with TestClient(app) as client:
        while not stop.wait(0.2):
            tasks = client.get("/api/tasks", headers=bearer(token))
            for task in tasks.json() if tasks.status_code == 200 else []:
                if task["status"] != "OPEN":
                    continue
                base = f"/api/tasks/{task['id']}"
                assert client.post(f"{base}/claim", headers=bearer(token)).status_code == 200
                values = {"colour_score": score(task["parameters"]["position_mm"])}
                answer = client.post(f"{base}/done", json={"values": values}, headers=bearer(token))
                assert answer.status_code == 200, answer.text
                seen.append(task["id"])


def _on_free_ports(tmp: Path) -> tuple[Path, Path]:
    """The example's files copied to ``tmp``, every port replaced by a free one."""
    for f in EXAMPLES.iterdir():
        if f.is_file():
            shutil.copy(f, tmp / f.name)
    lab, campaign = tmp / "lab.toml", tmp / "campaign.toml"
    ports = {p: str(free_port()) for p in ("50052", "4841", "5711", "5712", "5713", "5714")}
    for path in (lab, campaign):
        text = path.read_text()
        text = re.sub(r"\b(50052|4841|571[1-4])\b", lambda m: ports[m.group(1)], text)
        path.write_text(text)
    return lab, campaign


def test_standards_campaign_records_what_the_reference_servers_computed(
    tmp_path: Path,
) -> None:
    lab, campaign = _on_free_ports(tmp_path)
    journals = tmp_path / "journals"
    gateway = subprocess.Popen(
        [
            sys.executable,
            str(tmp_path / "serve_reference.py"),
            "--lab",
            str(lab),
            "--gateway",
            "--journal-dir",
            str(journals),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    db = f"sqlite:///{tmp_path / 'c.db'}"
    campaign.write_text(campaign.read_text().replace('db = "sqlite:///sdlab.db"', f'db = "{db}"'))
    stop, answered = threading.Event(), []
    person = threading.Thread(target=_person, args=(tmp_path, db, stop, answered), daemon=True)
    try:
        assert gateway.stdout is not None
        assert gateway.stdout.readline().strip() == "ready"
        person.start()
        code = run(campaign, RunOptions(db_url=db, progress=False))
        assert code == 0
    finally:
        stop.set()
        gateway.terminate()
        gateway.wait(timeout=30)
        person.join(timeout=30)
    assert len(answered) == 4  # one task per experiment, each answered once

    rows = experiments(db)
    assert [r["status"] for r in rows] == [ExperimentStatus.COMPLETED] * 4
    by_request = {s["request_id"]: r for r in rows for s in r["steps"]}
    for r in rows:
        assert [s["status"] for s in r["steps"]] == [StepStatus.COMPLETED] * 5
        assert [s["instrument"] for s in r["steps"]] == [
            "sila-heater",
            "opcua-heater",
            "psu",
            "stage",
            "operator",
        ]

    def run_order(instrument: str) -> list[dict[str, object]]:
        lines = journal(journals / f"{instrument}.jsonl")
        return [by_request[j["request_id"]] for j in lines if j["state"] == "running"]

    sila_c = sila2_heater.AMBIENT_C
    for r in run_order("sila-heater"):
        target = r["parameters"]["TargetTemperature"]  # type: ignore[index]
        m = r["measurements"]  # type: ignore[index]
        assert m["FinalTemperature"] == target
        assert m["HeatInput"] == sila2_heater.heat_input_j(sila_c, target)
        sila_c = target
    ua_c = opcua_heater.AMBIENT_C
    for r in run_order("opcua-heater"):
        target = r["parameters"]["Target"]  # type: ignore[index]
        m = r["measurements"]  # type: ignore[index]
        assert m["ramp_time_s"] == opcua_heater.ramp_time_s(ua_c, target)
        assert m["opcua_temperature"] == target
        ua_c = target
    for r in rows:
        p, m = r["parameters"], r["measurements"]
        assert m["voltage"] == round(p["voltage_v"], 3)  # the supply keeps 3 decimals
        assert m["output_on"] == 1.0
        assert m["position"] == p["position_mm"]
        assert m["colour_score"] == score(p["position_mm"])  # what the person entered
