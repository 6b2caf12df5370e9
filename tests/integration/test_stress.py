"""Kill one campaign at random moments (SIGKILL of ``sdlab run``'s whole process tree:
the controller, Ray's GCS, raylet and actor workers, the simulated servers), restart it each
time, on SQLite and on PostgreSQL; then check that nothing recorded before a kill was lost,
no action ran twice unless flagged as a re-run, and the campaign reached its budget.

The suite kills it 3 times on each database, twice while it runs and once while it starts
(the seeded draws; each restart costs the start of ``sdlab run``: imports, Ray, the
servers); ``python -m benchmarks.reliability`` sets ``SDLAB_STRESS_KILLS=20`` for the
figures ``docs/reliability.md`` quotes."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from models.status import ExperimentStatus
from tests.integration.helpers import (
    branin_campaign,
    check_history,
    event_kinds,
    experiments,
    record_figures,
)
from tests.integration.test_crash_recovery import _kill_everything, _start_run

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("SDLAB_STRESS_KILLS", "3"))
BUDGET = 60 if KILLS >= 20 else 30


def _steps_sent(db: str) -> int:
    try:
        return sum(len(r["steps"]) for r in experiments(db))
    except Exception:  # the store may not exist yet
        return 0


def test_random_kills_lose_nothing_and_duplicate_nothing(tmp_path: Path, db_url: str) -> None:
    rng = random.Random(20261126)
    journal_dir = tmp_path / "journal"
    path = branin_campaign(
        tmp_path / "c.toml", name="stress", budget=BUDGET, instruments=2, duration_s=0.3
    )
    snapshots: list[list[dict[str, Any]]] = []
    moments = {"starting": 0, "running": 0}
    for _ in range(KILLS):
        before = _steps_sent(db_url)
        proc = _start_run(path, db_url, tmp_path, journal_dir)
        if rng.random() < 0.35:
            # while it starts: importing, starting Ray, migrating, starting the servers
            time.sleep(rng.uniform(0.2, 4.0))
            moments["starting"] += 1
        else:
            # once this run has sent a step: mid-step, recording, planning, dispatching
            deadline = time.monotonic() + 120
            while _steps_sent(db_url) == before:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "the controller never sent a step"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.0))
            moments["running"] += 1
        assert proc.poll() is None, "the campaign ended before it could be killed"
        try:
            snapshots.append(experiments(db_url))
        except Exception:  # killed before the store was created
            snapshots.append([])
        _kill_everything(proc)
    proc = _start_run(path, db_url, tmp_path, journal_dir)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out

    figures = check_history(db_url, snapshots, journal_dir, "branin")
    rows = experiments(db_url)
    assert sum(r["status"] == ExperimentStatus.COMPLETED for r in rows) == BUDGET
    kinds = event_kinds(db_url)
    assert kinds.count("campaign.started") >= moments["running"] + 1
    assert kinds.count("recovery.done") > 0
    assert kinds[-1] == "campaign.stopped"
    record_figures(
        f"stress-{db_url.split(':', 1)[0]}",
        {"kills": KILLS, **moments, **figures, "completed": BUDGET},
    )
