"""The Python API end to end: ``Campaign.run()`` on a spec made in Python, and a notebook
following a campaign that ``sdlab run`` (another process) is running."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from controller import Campaign
from models.campaign_file import load_campaign
from models.errors import CampaignStateError
from tests.integration.helpers import branin_campaign, experiments

pytestmark = pytest.mark.slow
RUN_FLAGS = ("--no-progress", "--ray-address")


def branin_spec(name: str, budget: int) -> dict[str, Any]:
    """A Branin campaign on two simulated stations, as a notebook would write it."""
    return {
        "campaign": {"name": name, "seed": 7},
        "parameters": [
            {"name": "x1", "type": "continuous", "lower": -5.0, "upper": 10.0},
            {"name": "x2", "type": "continuous", "lower": 0.0, "upper": 15.0},
        ],
        "objectives": [{"name": "y", "direction": "maximize"}],
        "workflow": [{"kind": "station", "action": "measure"}],
        "instruments": [
            {
                "name": f"station-{i}",
                "kind": "station",
                "simulated": {"world": "branin", "noise_std": 0.0, "seed": i},
            }
            for i in (1, 2)
        ],
        "planner": {"name": "sobol"},
        "budget": {"max_experiments": budget},
    }


def test_run_a_campaign_made_in_python(db_url: str, ray_address: str, tmp_path: Path) -> None:
    c = Campaign(branin_spec("from-python", 4), db=db_url)
    c.add_data([{"x1": 3.0, "x2": 2.0, "y": -2.0}])  # the budget becomes 5
    frame = c.run(progress=False, ray_address=ray_address)
    # the run keeps the budget the store holds (4 + the imported row), as sdlab run resumes
    assert (frame["status"] == "COMPLETED").sum() == 5
    assert c.progress()["status"] == "COMPLETED"
    exps = experiments(c.db)
    ran = [e for e in exps if e["steps"] and e["steps"][0]["instrument"] != "python"]
    assert len(ran) == 4
    assert {e["steps"][0]["instrument"] for e in ran} <= {"station-1", "station-2"}
    # noise-free Branin (negated) at the recorded points: what the stations measured
    for e in ran:
        x1, x2 = e["parameters"]["x1"], e["parameters"]["x2"]
        expected = -branin(x1, x2)
        assert e["measurements"]["y"] == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # the file run() wrote reads back as the same campaign
    written = c.write_file(tmp_path / "again.toml")
    assert load_campaign(written).spec_hash() == c.spec.spec_hash()
    c.close()


def branin(x1: float, x2: float) -> float:
    b, cc, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + cc * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def test_a_notebook_follows_a_campaign_another_process_runs(
    db_url: str, ray_address: str, tmp_path: Path
) -> None:
    path = branin_campaign(tmp_path / "c.toml", name="watched", budget=5, instruments=1)
    text = path.read_text().replace("duration_s = 0.0", "duration_s = 1.0")
    path.write_text(text)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controller.cli",
            "run",
            str(path),
            "--db",
            db_url,
            *RUN_FLAGS,
            ray_address,
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[int] = []
    refused = False
    notebook: Campaign | None = None
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if notebook is None:
                try:
                    notebook = Campaign.open("watched", db=db_url)
                except CampaignStateError:  # not created yet
                    time.sleep(0.2)
                    continue
            p = notebook.progress()
            done = p.get("COMPLETED", 0)
            if not seen or done != seen[-1]:
                seen.append(done)
            if 0 < done < 5 and not refused:
                # a controller holds the lease: the notebook may watch, not ask
                with pytest.raises(CampaignStateError, match="being run by a controller"):
                    notebook.ask(1)
                refused = True
            time.sleep(0.2)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert notebook is not None
    assert refused
    assert any(0 < n < 5 for n in seen), seen  # progress seen while it ran
    assert seen == sorted(seen)
    frame = notebook.results()  # read afresh: the finished run
    assert (frame["status"] == "COMPLETED").sum() == 5
    assert notebook.progress()["status"] == "COMPLETED"
    assert notebook.best() is not None
    notebook.close()
