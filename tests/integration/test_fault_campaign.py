"""A whole campaign on the real stack (``sdlab run``: Ray, ZeroMQ, SQLite) whose simulated
stations inject every class of fault, crashes of their server processes included: it must
reach its budget with true values, lose nothing and run nothing twice unflagged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from models.status import ExperimentStatus
from sim.faults import Fault, read_fault_log
from tests.integration.helpers import (
    branin_campaign,
    check_history,
    event_kinds,
    experiments,
    record_figures,
)

pytestmark = pytest.mark.slow

BUDGET = 40

FAULTS = """
error_rate = 0.08
hang_rate = 0.04
slow_rate = 0.04
slow_factor = 4
malformed_rate = 0.04
bad_result_rate = 0.04
crash_rate = 0.15
drop_rate = 0.04
drop_s = 1.0
"""

RELIABILITY = """
[reliability]
max_attempts = 10
backoff_s = 0.1
quarantine_after = 4
quarantine_s = 2.0
heartbeat_s = 0.3
silent_after_s = 1.5
"""


def test_a_campaign_whose_instruments_fail_in_every_way_still_completes(
    tmp_path: Path, ray_address: str
) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    path = branin_campaign(
        tmp_path / "c.toml",
        name="faulty",
        budget=BUDGET,
        instruments=2,
        duration_s=0.1,
        faults=FAULTS,
        timeout_s=2.0,
        extra=RELIABILITY,
    )
    # the servers crash, not the controller: it joins the session's Ray instance
    cmd = [sys.executable, "-m", "controller.cli", "run", str(path), "--db", db, "--no-progress"]
    cmd += ["--ray-address", ray_address]
    proc = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    journal_dir = tmp_path / ".c.db.sim" / "faulty"
    figures = check_history(db, [], journal_dir, "branin")
    rows = experiments(db)
    assert sum(r["status"] == ExperimentStatus.COMPLETED for r in rows) == BUDGET
    injected = {f.value: 0 for f in Fault}
    for log in journal_dir.glob("*.faults.jsonl"):
        for line in read_fault_log(log):
            injected[line["fault"]] += 1
    assert injected["crash"] > 0, injected  # and the servers came back each time
    assert sum(injected.values()) >= 5, injected
    kinds = event_kinds(db)
    assert "step.rerun" in kinds
    assert "instrument.fault" in kinds
    record_figures(
        "faulty-campaign",
        {"injected": injected, "completed": BUDGET, **figures},
    )
