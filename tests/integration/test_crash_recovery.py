"""Kill ``sdlab run`` with SIGKILL (its whole process group: the controller, Ray's GCS and
raylet, the simulated servers it started) while experiments are in flight, start it again,
and check that nothing was lost or silently run twice."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from models.status import ExperimentStatus, StepStatus
from tests.integration.helpers import (
    branin_campaign,
    branin_servers,
    check_history,
    check_samples,
    event_kinds,
    experiments,
    record_figures,
)

pytestmark = pytest.mark.slow

BUDGET = 14


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_run(path: Path, db: str, cwd: Path, journal_dir: Path | None) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "controller.cli", "run", str(path), "--db", db, "--no-progress"]
    env = dict(os.environ)
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, so we can kill all of it
        env=env,
    )


def _wait_for_in_flight(
    db: str, proc: subprocess.Popen[str], min_done: int
) -> list[dict[str, Any]]:
    """Poll the store until at least ``min_done`` experiments completed and one is running."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            rows = experiments(db)
        except Exception:  # the database may not exist yet
            rows = []
        done = sum(r["status"] == ExperimentStatus.COMPLETED for r in rows)
        running = [
            r
            for r in rows
            if any(s["status"] in (StepStatus.QUEUED, StepStatus.RUNNING) for s in r["steps"])
        ]
        if done >= min_done and running:
            return rows
        time.sleep(0.05)
    raise AssertionError("the campaign never had an experiment in flight")


def _kill_everything(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the run's process group and every process below it.

    Ray's actor workers put themselves in process groups of their own, so killing the
    group alone would leave the campaign actor running on for a moment; a power cut
    would not.
    """
    tree = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGKILL)
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(tree, timeout=30)
    proc.wait(30)
    if proc.stdout:
        proc.stdout.close()


@pytest.mark.parametrize("servers", ["external", "embedded"])
def test_sigkill_mid_campaign_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, servers: str
) -> None:
    journal_dir = tmp_path / "journal"
    db = f"sqlite:///{tmp_path / 'c.db'}"
    server: subprocess.Popen[str] | None = None
    if servers == "external":
        # The instrument server outlives the controller, as a real instrument PC would.
        address = f"tcp://127.0.0.1:{_free_port()}"
        sim_file = branin_servers(tmp_path / "sim.toml", address, duration_s=0.4)
        server = subprocess.Popen(
            [sys.executable, "-m", "sim.serve", str(sim_file), "--journal-dir", str(journal_dir)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        assert '"ready": true' in server.stdout.readline()
        path = branin_campaign(tmp_path / "c.toml", budget=BUDGET, address=address)
    else:
        # Each experiment's sample sits in one of two crucibles from its first step to its
        # last: a restarted controller must know who holds which.
        crucibles = '[[resources]]\nname = "crucible"\ncapacity = 2\n'
        path = branin_campaign(
            tmp_path / "c.toml", budget=BUDGET, instruments=2, duration_s=0.4, extra=crucibles
        )
        path.write_text('sample_container = "crucible"\n' + path.read_text())
    try:
        snapshots: list[list[dict[str, Any]]] = []
        for min_done in (2, 6):
            proc = _start_run(path, db, tmp_path, journal_dir)
            snapshots.append(_wait_for_in_flight(db, proc, min_done))
            _kill_everything(proc)
        proc = _start_run(path, db, tmp_path, journal_dir)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(30)

    figures = check_history(db, snapshots, journal_dir, "branin")
    figures["sample_moves"] = check_samples(db, 2 if servers == "embedded" else None)
    rows = experiments(db)
    assert sum(r["status"] == ExperimentStatus.COMPLETED for r in rows) == BUDGET
    record_figures(f"crash-{servers}", {"kills": 2, **figures})

    kinds = event_kinds(db)
    assert kinds.count("campaign.started") == 3
    assert "recovery.done" in kinds
