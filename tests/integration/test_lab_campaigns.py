"""Two campaigns, each run by its own ``sdlab run`` process, share one lab on PostgreSQL.

The lab file declares three simulated stations and a robot arm; one ``sdlab instruments
serve`` process hosts the stations for both campaigns. Every step needs a station and the
arm, granted across the two controllers through the store.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select

from controller.store import make_engine, session_factory, transaction
from models.status import CampaignStatus, ExperimentStatus, StepStatus
from models.tables import CampaignRow, ExperimentRow, LabUnitRow, StepRow, utcnow
from tests.conftest import _postgres_schema_url, postgres_test_url

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

BUDGET = 4


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema (the test is skipped when no server answers)."""
    yield from _postgres_schema_url(postgres_test_url())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_lab(directory: Path, arms: int) -> Path:
    stations = "".join(
        f"""
[[instruments]]
name = "station-{i}"
kind = "station"
address = "tcp://127.0.0.1:{_free_port()}"
gateway = "bench"
[instruments.simulated]
world = "branin"
noise_std = 0.0
duration_s = 0.3
seed = {i}
"""
        for i in (1, 2, 3)
    )
    path = directory / "lab.toml"
    path.write_text(
        f"""
[lab]
name = "shared-lab"

[[gateways]]
name = "bench"
host = "127.0.0.1"
{stations}
[[resources]]
name = "arm"
capacity = {arms}
"""
    )
    return path


def write_campaign(directory: Path, name: str, seed: int) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(
        f"""
[campaign]
name = "{name}"
seed = {seed}

[lab]
name = "shared-lab"
kinds = ["station"]
resources = ["arm"]

[[parameters]]
name = "x1"
type = "continuous"
lower = -5.0
upper = 10.0

[[parameters]]
name = "x2"
type = "continuous"
lower = 0.0
upper = 15.0

[[objectives]]
name = "y"
direction = "maximize"

[[workflow]]
kind = "station"
action = "measure"
needs = ["arm"]

[planner]
name = "sobol"
prefetch = 2

[budget]
max_experiments = {BUDGET}
"""
    )
    return path


def sdlab(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "controller.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=dict(os.environ),
    )


def _kill_tree(proc: subprocess.Popen[str]) -> None:
    """SIGKILL ``proc``'s process group and every process below it (Ray workers too)."""
    with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
        tree = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGKILL)
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(tree, timeout=30)
    proc.wait(30)


@pytest.fixture
def lab_servers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """The lab file, its stations served by one gateway process for every campaign."""
    lab = write_lab(tmp_path, getattr(request, "param", 2))
    server = sdlab("instruments", "serve", str(lab), cwd=tmp_path)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert json.loads(line)["ready"], line
        yield lab
    finally:
        _kill_tree(server)


def _apply(lab: Path, db: str, cwd: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "controller.cli", "lab", "apply", str(lab), "--db", db],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "unit arm-1 (arm) added" in res.stdout


def _run(
    path: Path, db: str, ray: str | None, cwd: Path, lease_s: float = 30.0
) -> subprocess.Popen[str]:
    """``sdlab run`` on the session's Ray, or (``ray=None``) on a Ray of its own, which a
    SIGKILL of its process tree takes down with it, as a power cut would: the controller
    actor of a run on the shared Ray outlives its killed driver until Ray notices."""
    joins = ["--ray-address", ray] if ray is not None else []
    return sdlab(
        "run", str(path), "--db", db, "--no-progress", *joins,
        "--lease-s", str(lease_s), cwd=cwd,
    )  # fmt: skip


def _finish(proc: subprocess.Popen[str], timeout_s: float = 180) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        raise
    assert proc.returncode == 0, out
    return out


Step = tuple[str | None, str, StepStatus, datetime | None, datetime | None]


def _steps(db: str) -> list[Step]:
    engine = make_engine(db)
    try:
        with transaction(session_factory(engine)) as s:
            rows = s.execute(
                select(
                    StepRow.instrument,
                    CampaignRow.name,
                    StepRow.status,
                    StepRow.started_at,
                    StepRow.finished_at,
                )
                .join(ExperimentRow, ExperimentRow.id == StepRow.experiment_id)
                .join(CampaignRow, CampaignRow.id == ExperimentRow.campaign_id)
            )
            return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]
    finally:
        engine.dispose()


def _campaigns(db: str) -> dict[str, tuple[CampaignStatus, int]]:
    engine = make_engine(db)
    try:
        with transaction(session_factory(engine)) as s:
            out = {}
            for c in s.scalars(select(CampaignRow)):
                done = s.scalars(
                    select(ExperimentRow.id).where(
                        ExperimentRow.campaign_id == c.id,
                        ExperimentRow.status == ExperimentStatus.COMPLETED,
                    )
                ).all()
                out[c.name] = (CampaignStatus(c.status), len(done))
            return out
    finally:
        engine.dispose()


def _grants(db: str) -> dict[str, str | None]:
    """Each lab unit's campaign under a live grant (``None``: free)."""
    engine = make_engine(db)
    try:
        with transaction(session_factory(engine)) as s:
            now = utcnow()
            names: dict[int | None, str] = {
                cid: name for cid, name in s.execute(select(CampaignRow.id, CampaignRow.name))
            }
            return {
                u.unit: names.get(u.campaign_id)
                if u.holder is not None and u.expires_at is not None and u.expires_at > now
                else None
                for u in s.scalars(select(LabUnitRow))
            }
    finally:
        engine.dispose()


def assert_no_instrument_ran_two_steps_at_once(db: str) -> dict[str, set[str]]:
    """Check the recorded step times; returns which campaigns used each instrument."""
    by_instrument: dict[str, list[tuple[datetime, datetime | None, str]]] = {}
    for inst, campaign, status, started, finished in _steps(db):
        if started is None:
            continue
        assert finished is not None or status != StepStatus.COMPLETED
        by_instrument.setdefault(str(inst), []).append((started, finished, campaign))
    for inst, spans in by_instrument.items():
        spans.sort(key=lambda s: s[0])
        for (_s0, f0, c0), (s1, _, c1) in itertools.pairwise(spans):
            assert f0 is not None, f"{inst}: a step of {c0} never ended before {c1} started"
            assert f0 <= s1, f"{inst}: a step of {c1} started at {s1} while {c0} ran until {f0}"
    return {inst: {c for _, _, c in spans} for inst, spans in by_instrument.items()}


def test_two_controllers_share_three_lab_stations_and_an_arm(
    tmp_path: Path, pg_url: str, ray_address: str, lab_servers: Path
) -> None:
    _apply(lab_servers, pg_url, tmp_path)
    runs = [
        _run(write_campaign(tmp_path, name, seed), pg_url, ray_address, tmp_path)
        for name, seed in (("campaign-a", 1), ("campaign-b", 2))
    ]
    for proc in runs:
        _finish(proc)
    assert _campaigns(pg_url) == {
        "campaign-a": (CampaignStatus.COMPLETED, BUDGET),
        "campaign-b": (CampaignStatus.COMPLETED, BUDGET),
    }
    users = assert_no_instrument_ran_two_steps_at_once(pg_url)
    assert set(users) <= {"station-1", "station-2", "station-3"}
    assert set().union(*users.values()) == {"campaign-a", "campaign-b"}
    assert set(_grants(pg_url).values()) == {None}, "every grant was given back"


@pytest.mark.parametrize("lab_servers", [1], indirect=True)  # one arm: A's must come back
def test_a_killed_controllers_grants_return_after_its_lease_and_the_other_campaign_completes(
    tmp_path: Path, pg_url: str, ray_address: str, lab_servers: Path
) -> None:
    _apply(lab_servers, pg_url, tmp_path)
    a = _run(write_campaign(tmp_path, "campaign-a", 1), pg_url, None, tmp_path, 4.0)
    b = _run(write_campaign(tmp_path, "campaign-b", 2), pg_url, ray_address, tmp_path)
    deadline = time.monotonic() + 150
    while "campaign-a" not in _grants(pg_url).values():  # wait until A holds the arm
        assert a.poll() is None, a.communicate()[0]
        assert time.monotonic() < deadline, "campaign-a never held a lab unit"
        time.sleep(0.05)
    _kill_tree(a)
    held = {u: c for u, c in _grants(pg_url).items() if c is not None}
    assert held.get("arm-1") == "campaign-a", held  # the dead controller's grant stays ...
    _finish(b)  # ... until its lease expires; then the arm returns to the lab and B gets it
    status = _campaigns(pg_url)
    assert status["campaign-b"] == (CampaignStatus.COMPLETED, BUDGET)
    assert status["campaign-a"][1] < BUDGET
    assert set(_grants(pg_url).values()) == {None}
    assert_no_instrument_ran_two_steps_at_once(pg_url)
