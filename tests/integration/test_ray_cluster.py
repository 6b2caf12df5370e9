"""A campaign on a two-node Ray cluster whose planner node dies mid-campaign.

The cluster is started as an operator starts one (``ray start --head``, then ``ray start
--address=...`` on the model node with its custom resource); ``sdlab run --ray-address``
joins it from a subprocess (the test session has its own local Ray). The campaign's
``[planner.placement]`` puts the planner on the model node (its custom resource, and the GPU
it declares to Ray: this machine has none, the planner runs on the CPU). That node is killed while
experiments are in flight, a replacement model node joins, and Ray restarts the planner
actor there; the actor rebuilds from the store and the campaign completes with nothing lost
and nothing run twice.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from controller.simproc import default_journal_dir
from controller.store import make_engine, session_factory, transaction
from models.status import ExperimentStatus, StepStatus
from models.tables import DecisionRow, EventRow
from tests.integration.helpers import branin_campaign, check_history, experiments
from tests.integration.ray_cluster import LocalRayCluster

pytestmark = pytest.mark.slow

BUDGET = 12
PLACEMENT = """
[planner.placement]
num_cpus = 1
num_gpus = 1
resources = { model_node = 1 }
restart_timeout_s = 90
"""


def _planner_starts(db: str) -> list[dict[str, Any]]:
    """The ``planner.started`` events' data (with ``at``, the event's time), in order."""
    engine = make_engine(db)
    try:
        with transaction(session_factory(engine), read_only=True) as s:
            rows = s.scalars(
                select(EventRow).where(EventRow.kind == "planner.started").order_by(EventRow.id)
            )
            return [{**r.data, "at": r.created_at} for r in rows]
    finally:
        engine.dispose()


def _decided_after(db: str, when: datetime) -> int:
    """How many planner decisions were recorded after ``when``."""
    engine = make_engine(db)
    try:
        with transaction(session_factory(engine), read_only=True) as s:
            times = s.scalars(select(DecisionRow.created_at))
            return sum(t > when for t in times)
    finally:
        engine.dispose()


def _wait_mid_campaign(db: str, proc: subprocess.Popen[str], min_done: int) -> list[dict[str, Any]]:
    """Poll the store until the planner has started, ``min_done`` experiments completed and
    one is in flight; returns the experiments then.

    The deadline only catches a campaign that never starts: on two shared, busy cores the
    cluster's processes (two nodes' agents, the run, two actors importing the planners) take
    minutes to start; on a quiet machine well under one.
    """
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            rows = experiments(db)
            started = _planner_starts(db)
        except Exception:  # the database may not exist yet
            rows, started = [], []
        done = sum(r["status"] == ExperimentStatus.COMPLETED for r in rows)
        running = any(
            s["status"] in (StepStatus.QUEUED, StepStatus.RUNNING) for r in rows for s in r["steps"]
        )
        if started and done >= min_done and running:
            return rows
        time.sleep(0.2)  # each poll opens the store: leave the cores to the campaign
    raise AssertionError("the campaign never got going on the cluster")


def test_the_campaign_survives_losing_the_planner_node(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    path = branin_campaign(
        tmp_path / "c.toml", name="cluster", budget=BUDGET, instruments=2, duration_s=0.3
    )
    path.write_text(path.read_text().replace("[budget]", PLACEMENT + "\n[budget]"))
    cluster = LocalRayCluster()
    proc: subprocess.Popen[str] | None = None
    t0 = time.monotonic()
    phases: dict[str, float] = {}
    try:
        address = cluster.start_head()
        phases["head up"] = time.monotonic() - t0
        model = {"model_node": 1.0}
        first = cluster.add_worker("model-1", "127.0.0.2", resources=model, num_gpus=1)
        run = ["run", str(path), "--db", db, "--no-progress", "--ray-address", address]
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", *run],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=cluster.env(),
        )
        snapshot = _wait_mid_campaign(db, proc, min_done=3)
        phases["planner started, 3 done"] = time.monotonic() - t0
        killed_at = datetime.now(UTC)
        first.kill()  # the planner's node dies while experiments are in flight
        cluster.add_worker("model-2", "127.0.0.3", resources=model, num_gpus=1)
        out, _ = proc.communicate(timeout=300)
        phases["campaign done"] = time.monotonic() - t0
        assert proc.returncode == 0, out
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(30)
        cluster.shutdown()

    # Where the planner ran: on the first model node, then, restarted by Ray and rebuilt
    # from the store, on its replacement; never on the head (it has no model_node).
    starts = _planner_starts(db)
    assert [s["node_ip"] for s in starts] == ["127.0.0.2", "127.0.0.3"], starts
    assert [s["restarted"] for s in starts] == [False, True]
    assert starts[0]["node_id"] != starts[1]["node_id"]
    assert all(s["resources"] == {"CPU": 1.0, "GPU": 1.0, "model_node": 1.0} for s in starts)
    done_at_kill = sum(r["status"] == ExperimentStatus.COMPLETED for r in snapshot)
    assert starts[1]["observations"] >= done_at_kill
    assert _decided_after(db, starts[1]["at"]) > 0  # the restarted planner went on planning

    # Nothing lost, nothing run twice: every experiment recorded before the kill is still
    # there, every proposal became one experiment, every request id is unique and no server
    # started a request twice; every experiment ended COMPLETED or FAILED exactly once.
    figures = check_history(db, [snapshot], default_journal_dir(db, "cluster"), "branin")
    rows = experiments(db)
    assert figures["lost"] == figures["duplicated"] == 0
    assert {r["status"] for r in rows} <= {ExperimentStatus.COMPLETED, ExperimentStatus.FAILED}
    assert sum(r["status"] == ExperimentStatus.COMPLETED for r in rows) == BUDGET
    back_s = (starts[1]["at"] - killed_at).total_seconds()
    print(
        f"cluster campaign: planner back {back_s:.1f} s after its node was killed; "
        f"{len(rows)} experiments, {figures['reruns']} re-runs, "
        f"{done_at_kill} completed when the planner node died, "
        f"planner rebuilt from {starts[1]['observations']} observations "
        f"in {starts[1]['rebuild_s']:.2f} s; elapsed: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items())
    )
