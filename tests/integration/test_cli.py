"""The ``sdlab`` command line, run as a user runs it (subprocesses)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import branin_campaign


def sdlab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_invalid_campaign_exits_2_with_key_path_and_writes_nothing(tmp_path: Path) -> None:
    path = branin_campaign(tmp_path / "bad.toml")
    path.write_text(path.read_text().replace('direction = "maximize"', 'direction = "up"'))

    res = sdlab("run", str(path), "--db", "sqlite:///bad.db", cwd=tmp_path)

    assert res.returncode == 2
    assert str(path) in res.stderr
    assert "objectives[0].direction: expected 'maximize' or 'minimize'" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "bad.db").exists()


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('name = "sobol"', 'name = "nope"', "planner.name"),
        ("max_experiments = 8", "max_experiments = 0", "budget.max_experiments"),
        ("upper = 15.0", "upper = -1.0", "parameters[1]"),
        ('kind = "station"\naction', 'kind = "oven"\naction', "workflow[0].kind"),
        ("[campaign]", "[campaign]\ncolour = 1", "campaign.colour: unknown key"),
        ("[[objectives]]", "[[objectives]", "invalid TOML"),
        (
            "[budget]",
            "[planner.placement]\nresources = { model_node = -1 }\n[budget]",
            "planner.placement.resources.model_node",
        ),
    ],
)
def test_each_kind_of_bad_file_names_its_key(tmp_path: Path, old: str, new: str, key: str) -> None:
    path = branin_campaign(tmp_path / "bad.toml")
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))

    res = sdlab("run", str(path), "--db", "sqlite:///bad.db", cwd=tmp_path)

    assert res.returncode == 2, res.stderr
    assert key in res.stderr
    assert not (tmp_path / "bad.db").exists()


@pytest.mark.slow
def test_run_status_export(tmp_path: Path, ray_address: str) -> None:
    path = branin_campaign(tmp_path / "c.toml", budget=5, duration_s=0.01)

    res = sdlab("run", str(path), "--no-progress", "--ray-address", ray_address, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "5 of 5 done" in res.stdout
    assert (tmp_path / "sdlab.db").exists()  # the default database

    status = sdlab("status", cwd=tmp_path)
    assert status.returncode == 0
    assert "branin-test" in status.stdout
    assert "COMPLETED" in status.stdout

    out = sdlab("export", "--format", "csv", cwd=tmp_path)
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == 5
    for col in ("id", "campaign", "status", "param.x1", "param.x2", "obj.y", "planner"):
        assert col in rows[0]
    assert {r["planner"] for r in rows} == {"sobol"}
    assert all(r["decision_id"] and r["instruments"].startswith("station-") for r in rows)

    js = json.loads(
        sdlab("export", "--format", "json", "--campaign", "branin-test", cwd=tmp_path).stdout
    )
    assert [r["id"] for r in js] == [int(r["id"]) for r in rows]


def test_users_add_prints_a_working_token_once(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from controller.api.app import create_app
    from controller.api.settings import ApiSettings

    res = sdlab("users", "add", "ada", "--role", "operator", "--db", "sqlite:///u.db", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    token = res.stdout.strip().splitlines()[-1]
    assert token.startswith("sdlab_")
    assert token not in (tmp_path / "u.db").read_bytes().decode("latin-1")  # only its hash
    again = sdlab("users", "add", "ada", "--role", "admin", "--db", "sqlite:///u.db", cwd=tmp_path)
    assert again.returncode == 1
    assert "exists already" in again.stderr
    listed = sdlab("users", "list", "--db", "sqlite:///u.db", cwd=tmp_path)
    assert listed.stdout.split() == ["ada", "operator", "active"]
    app = create_app(ApiSettings(db_url=f"sqlite:///{tmp_path / 'u.db'}", data_dir=tmp_path))
    with TestClient(app) as client:
        ok = client.get("/api/campaigns", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        refused = client.post(
            "/api/users",
            headers={"Authorization": f"Bearer {token}"},
            json={"name": "eve", "role": "admin"},
        )
        assert refused.status_code == 403
    app.state.engine.dispose()
