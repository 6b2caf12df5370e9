"""Campaigns that share a lab, each run by its own ``sdlab run`` process: files and processes.

What the shared-lab integration test (``tests/integration/test_lab_campaigns.py``) and the
lab benchmark (``benchmarks/lab_scale.py``) both need: a lab file of simulated stations
served by one ``sdlab instruments serve`` gateway, campaign files that name the lab, the
``sdlab`` subprocesses (``lab apply``, ``run``) and a fresh PostgreSQL schema per run, plus
the step rows they read back from the store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import psutil
from sqlalchemy import select

from controller.store import make_engine, session_factory, transaction
from models.status import StepStatus
from models.tables import CampaignRow, ExperimentRow, StepRow
from sim.campaign_toml import problem_toml

logger = logging.getLogger(__name__)

__all__ = [
    "LAB_NAME",
    "Step",
    "apply_lab",
    "finish",
    "free_port",
    "fresh_schema",
    "kill_tree",
    "lab_steps",
    "run_campaign",
    "sdlab",
    "serve_lab",
    "write_campaign",
    "write_lab",
]

LAB_NAME = "shared-lab"
"""The lab's name in the files written here."""

Step = tuple[str | None, str, StepStatus, datetime | None, datetime | None]
"""A step as read back: instrument, campaign name, status, started at, finished at."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_lab(
    directory: Path, arms: int | None = 2, *, stations: int = 3, duration_s: float = 0.3
) -> Path:
    """Write ``lab.toml``: ``stations`` simulated Branin stations behind one gateway.

    Args:
        directory: Where the file goes.
        arms: Capacity of the ``arm`` resource (``None``: the lab has no arm).
        stations: How many stations (``station-1`` ...).
        duration_s: How long each station's ``measure`` action takes, in seconds.

    Returns:
        The file's path.
    """
    body = "".join(
        f"""
[[instruments]]
name = "station-{i}"
kind = "station"
address = "tcp://127.0.0.1:{free_port()}"
gateway = "bench"
[instruments.simulated]
world = "branin"
noise_std = 0.0
duration_s = {duration_s}
seed = {i}
"""
        for i in range(1, stations + 1)
    )
    if arms is not None:
        body += f'\n[[resources]]\nname = "arm"\ncapacity = {arms}\n'
    path = directory / "lab.toml"
    path.write_text(
        f'\n[lab]\nname = "{LAB_NAME}"\n\n[[gateways]]\nname = "bench"\nhost = "127.0.0.1"\n{body}'
    )
    return path


def write_campaign(
    directory: Path,
    name: str,
    seed: int,
    *,
    budget: int,
    planner: str = "sobol",
    prefetch: int = 2,
    arm: bool = True,
    planner_resources: Mapping[str, float] | None = None,
) -> Path:
    """Write ``<name>.toml``: a Branin campaign on the lab's stations.

    Args:
        directory: Where the file goes.
        name: The campaign's name.
        seed: Its seed.
        budget: ``budget.max_experiments``.
        planner: The planner's registered name.
        prefetch: ``planner.prefetch``.
        arm: Whether every step also needs a unit of the lab's ``arm``.
        planner_resources: Custom Ray resources the planner's actor asks for
            (``[planner.placement] resources``); ``None``: no placement table.

    Returns:
        The file's path.
    """
    uses = '\nresources = ["arm"]' if arm else ""
    needs = '\nneeds = ["arm"]' if arm else ""
    placement = ""
    if planner_resources is not None:
        pairs = ", ".join(f"{k} = {v}" for k, v in planner_resources.items())
        placement = f"\n[planner.placement]\nresources = {{ {pairs} }}\n"
    path = directory / f"{name}.toml"
    path.write_text(
        f"""
[campaign]
name = "{name}"
seed = {seed}

[lab]
name = "{LAB_NAME}"
kinds = ["station"]{uses}

{problem_toml("branin")}[[workflow]]
kind = "station"
action = "measure"{needs}

[planner]
name = "{planner}"
prefetch = {prefetch}
{placement}
[budget]
max_experiments = {budget}
"""
    )
    return path


def sdlab(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``sdlab ARGS`` (output and errors on one pipe) in a process group of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "controller.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=dict(env if env is not None else os.environ),
    )


def start_dashboard(
    db: str, cwd: Path, *extra: str, timeout_s: float = 60.0
) -> tuple[subprocess.Popen[str], str]:
    """Start ``sdlab serve`` on ``db`` (data in ``cwd/data``) and wait until it answers.

    Returns:
        The process and the dashboard's base URL.

    Raises:
        AssertionError: If it exits first, or does not answer within ``timeout_s``.
    """
    import httpx

    port = free_port()
    data = str(cwd / "data")
    proc = sdlab("serve", "--db", db, "--port", str(port), "--data-dir", data, *extra, cwd=cwd)
    base = f"http://127.0.0.1:{port}"
    end = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"sdlab serve exited: {proc.communicate()[0]}")
        assert time.monotonic() < end, "sdlab serve did not answer"
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)


def kill_tree(proc: subprocess.Popen[str]) -> None:
    """SIGKILL ``proc``'s process group and every process below it (Ray workers too)."""
    with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
        tree = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGKILL)
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(tree, timeout=30)
    proc.wait(30)


@contextlib.contextmanager
def serve_lab(lab: Path, cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """Serve the lab file's stations from one gateway process until the block ends.

    Raises:
        RuntimeError: If the gateway did not report itself ready.
    """
    server = sdlab("instruments", "serve", str(lab), cwd=cwd)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        try:
            ready = bool(json.loads(line)["ready"])
        except (ValueError, KeyError, TypeError):
            ready = False
        if not ready:
            raise RuntimeError(f"the lab gateway did not start: {line}")
        yield server
    finally:
        kill_tree(server)


def apply_lab(lab: Path, db: str, cwd: Path) -> str:
    """Record the lab file in the store (``sdlab lab apply``); returns what it printed.

    Raises:
        RuntimeError: If the command failed.
    """
    res = subprocess.run(
        [sys.executable, "-m", "controller.cli", "lab", "apply", str(lab), "--db", db],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if res.returncode != 0:
        raise RuntimeError(f"sdlab lab apply failed ({res.returncode}): {res.stderr}")
    return res.stdout


def run_campaign(
    path: Path,
    db: str,
    ray: str | None,
    cwd: Path,
    lease_s: float = 30.0,
    env: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
) -> subprocess.Popen[str]:
    """Start ``sdlab run`` of campaign file ``path`` on Ray cluster ``ray``, or (``None``)
    on a Ray of its own, which a SIGKILL of its process tree takes down with it, as a power
    cut would (the controller actor of a run on a shared Ray outlives its killed driver
    until Ray notices, and renews its grants meanwhile).

    ``extra`` are more options of ``sdlab run``; ``env`` the process's environment.
    """
    joins = ["--ray-address", ray] if ray is not None else []
    return sdlab(
        "run", str(path), "--db", db, "--no-progress", *joins,
        "--lease-s", str(lease_s), *extra, cwd=cwd, env=env,
    )  # fmt: skip


def finish(proc: subprocess.Popen[str], timeout_s: float = 180) -> str:
    """Wait for an ``sdlab`` process to exit with 0; returns its output.

    Raises:
        subprocess.TimeoutExpired: If it ran longer than ``timeout_s`` (it is killed).
        RuntimeError: If it exited with another code.
    """
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"sdlab exited with {proc.returncode}:\n{out}")
    return out


@contextlib.contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A URL of PostgreSQL server ``url`` whose connections see a new, empty schema.

    The schema is dropped when the block ends.
    """
    import psycopg

    libpq = url.replace("postgresql+psycopg://", "postgresql://")
    schema = f"sdlab_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq, connect_timeout=5, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(libpq, connect_timeout=5, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def lab_steps(db: str) -> list[Step]:
    """Every step of every campaign in the store, with its campaign's name."""
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
