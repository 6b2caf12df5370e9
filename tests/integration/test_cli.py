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
