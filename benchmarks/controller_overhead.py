"""Controller overhead: how much the controller adds to each experiment, and how many
experiments per second it sustains, on the full stack (Ray actors, ZeroMQ servers in their
own processes, SQLite in WAL mode).

The campaign uses instant simulated instruments (``duration_s = 0``) and the ``random``
planner, so nearly all of an experiment's time is the controller's own work: planning
round trip, safety gate, writing the experiment and the step before sending, the ZeroMQ
round trip, writing the result. Printed beside it, measured in the same run against the
same kind of server process: the raw ZeroMQ round trip of one ``submit`` with ``wait_s``
(the floor no controller can go under).

Per-experiment controller overhead, from the store's timestamps, two ways:

* the time each instrument sits idle between the end of one action and the start of the
  next (its own ``finished_at`` .. ``started_at``): what "keep every instrument busy" costs;
* the latency of one experiment, from the moment it is written as proposed to the moment its
  result is stored, less the time the instrument reports it spent on the action.

The same campaign runs on SQLite and on PostgreSQL reached through a proxy on loopback that
adds ``--delay-ms`` (5 ms) of latency each way (:mod:`benchmarks.latency_proxy`; a database
on another host). With ``--baseline DIR`` (a checkout of other code, e.g. a ``git worktree``
of ``main``) each database's campaign runs once with that code and once with this, one
after the other in the same session, and both are printed side by side; each campaign runs
in its own process (``sdlab run``'s code path: Ray, server processes, planner actor).

Usage:  python -m benchmarks.controller_overhead [--experiments N] [--pg-experiments M]
            [--instruments K] [--baseline DIR] [--postgres URL | --no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from controller.store import make_engine, session_factory, transaction
from instruments.client import InstrumentClient
from models.status import ExperimentStatus
from models.tables import ExperimentRow, StepRow
from sim.campaign_toml import problem_toml

CAMPAIGN = (
    """
[campaign]
name = "overhead"
seed = 1

"""
    + problem_toml("branin")
    + """[[workflow]]
kind = "station"
action = "measure"

{instruments}

[planner]
name = "random"
prefetch = {prefetch}

[budget]
max_experiments = {budget}
"""
)
INSTRUMENT = """
[[instruments]]
name = "station-{i}"
kind = "station"
[instruments.simulated]
world = "branin"
duration_s = 0.0
seed = {i}
"""


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def _round_trips(address: str, n: int) -> list[float]:
    client = InstrumentClient(address, timeout_s=10)
    out = []
    try:
        for i in range(n):
            t = time.perf_counter()
            state = await client.submit(f"rtt-{i}", "measure", {"x1": 1.0, "x2": 2.0}, wait_s=5)
            out.append(time.perf_counter() - t)
            assert state.state == "completed"
    finally:
        await client.close()
    return out


def raw_round_trip(campaign: Path, n: int) -> list[float]:
    """Submit+result round trips against a simulated server process, no controller."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.serve", str(campaign), "--only", "station-1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        address = json.loads(proc.stdout.readline())["endpoints"]["station-1"]
        return asyncio.run(_round_trips(address, n))
    finally:
        proc.terminate()
        proc.wait(10)


def controller_numbers(db_url: str) -> tuple[int, float, list[float], list[float]]:
    """Completed experiments, their time span, per-experiment latency less instrument time,
    and each instrument's idle gaps between one action's end and the next one's start."""
    engine = make_engine(db_url)
    try:
        with transaction(session_factory(engine)) as s:
            exps = s.scalars(
                select(ExperimentRow).where(ExperimentRow.status == ExperimentStatus.COMPLETED)
            ).all()
            all_steps = s.scalars(select(StepRow).order_by(StepRow.started_at)).all()
            steps = {st.experiment_id: st for st in all_steps}
            latency = []
            for e in exps:
                st = steps[e.id]
                assert e.finished_at is not None
                assert st.started_at is not None
                assert st.finished_at is not None
                wall = (e.finished_at - e.created_at).total_seconds()
                instrument = (st.finished_at - st.started_at).total_seconds()
                latency.append(wall - instrument)
            gaps = []
            by_instrument: dict[str, list[StepRow]] = {}
            for st in all_steps:
                by_instrument.setdefault(st.instrument or "", []).append(st)
            for seq in by_instrument.values():
                for a, b in itertools.pairwise(seq):
                    assert a.finished_at is not None
                    assert b.started_at is not None
                    gaps.append((b.started_at - a.finished_at).total_seconds())
            first = min(e.created_at for e in exps)
            last = max(e.finished_at for e in exps if e.finished_at)
            return len(exps), (last - first).total_seconds(), latency, gaps
    finally:
        engine.dispose()


RUN_CAMPAIGN = """
import sys
from pathlib import Path
from rich.console import Console
from controller.runner import RunOptions, run
options = RunOptions(db_url=sys.argv[2], progress=False)
sys.exit(run(Path(sys.argv[1]), options, Console(quiet=True)))
"""
"""What ``sdlab run CAMPAIGN --db URL`` does, run with the code under test on the path."""

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Result:
    """One campaign's figures."""

    code: str
    database: str
    n: int
    span_s: float
    total_s: float
    latency: list[float]
    gaps: list[float]


def run_campaign(code: Path, campaign: Path, db_url: str) -> float:
    """Run the campaign to its budget in a process that imports ``code``; its wall time."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RUN_CAMPAIGN, str(campaign), db_url], cwd=code, env=env
    )
    total = time.perf_counter() - t0
    assert proc.returncode == 0, f"the campaign did not reach its budget ({code}, {db_url})"
    return total


@contextmanager
def latency_proxy(target: str, delay_ms: float) -> Iterator[int]:
    """A :mod:`benchmarks.latency_proxy` process in front of ``target``; yields its port."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.latency_proxy",
            "--target",
            target,
            "--delay-ms",
            str(delay_ms),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield int(json.loads(proc.stdout.readline())["port"])
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def scratch_database(admin_url: str, name: str) -> Iterator[None]:
    """A new, empty PostgreSQL database ``name``, dropped afterwards."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def measure(code: Path, label: str, campaign: Path, db_url: str, database: str) -> Result:
    total = run_campaign(code, campaign, db_url)
    n, span, latency, gaps = controller_numbers(db_url)
    return Result(label, database, n, span, total, latency, gaps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiments", type=int, default=2000, help="budget on SQLite")
    ap.add_argument("--pg-experiments", type=int, default=300, help="budget on PostgreSQL (slower)")
    ap.add_argument("--instruments", type=int, default=4)
    ap.add_argument("--round-trips", type=int, default=2000)
    ap.add_argument(
        "--prefetch", type=int, default=0, help="planner.prefetch of the campaign (default 0)"
    )
    ap.add_argument("--baseline", type=Path, help="a checkout of the code to compare (e.g. main's)")
    ap.add_argument("--postgres", default=DEFAULT_POSTGRES, help="an admin URL of the server")
    ap.add_argument("--no-postgres", action="store_true", help="SQLite only")
    ap.add_argument("--delay-ms", type=float, default=5.0, help="latency added each way")
    args = ap.parse_args()
    console = Console(width=160)
    here = Path(__file__).resolve().parent.parent
    codes = [(here, "this")]
    if args.baseline is not None:
        codes.insert(0, (args.baseline.resolve(), "baseline"))
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:

        def campaign(budget: int) -> Path:
            path = Path(tmp) / f"overhead-{budget}.toml"
            insts = "".join(INSTRUMENT.format(i=i + 1) for i in range(args.instruments))
            path.write_text(
                CAMPAIGN.format(instruments=insts, budget=budget, prefetch=args.prefetch)
            )
            return path

        sqlite_campaign = campaign(args.experiments)
        rtt = raw_round_trip(sqlite_campaign, args.round_trips)
        for k, (code, label) in enumerate(codes):
            db = f"sqlite:///{Path(tmp) / f'overhead-{k}.db'}"
            results.append(measure(code, label, sqlite_campaign, db, "SQLite"))
        if not args.no_postgres:
            admin = make_url(args.postgres)
            target = f"{admin.host or '127.0.0.1'}:{admin.port or 5432}"
            pg_campaign = campaign(args.pg_experiments)
            with latency_proxy(target, args.delay_ms) as port:
                for k, (code, label) in enumerate(codes):
                    name = f"sdlab_overhead_{os.getpid()}_{k}"
                    url = admin.set(host="127.0.0.1", port=port, database=name)
                    db = url.render_as_string(hide_password=False)
                    with scratch_database(args.postgres, name):
                        where = f"PostgreSQL +{args.delay_ms:g} ms each way"
                        results.append(measure(code, label, pg_campaign, db, where))

    table = Table(
        title=f"controller overhead ({args.instruments} instant instruments, random planner, "
        f"prefetch {args.prefetch})"
    )
    table.add_column("database")
    table.add_column("code")
    table.add_column("experiments")
    table.add_column("experiments/s", justify="right")
    table.add_column("idle between actions p50 / p95", justify="right")
    table.add_column("proposed -> stored, less instrument, p50 / p95", justify="right")
    for r in results:
        table.add_row(
            r.database,
            r.code,
            str(r.n),
            f"{r.n / r.span_s:.0f}",
            f"{statistics.median(r.gaps) * 1e3:.2f} / {_quantile(r.gaps, 0.95) * 1e3:.2f} ms",
            f"{statistics.median(r.latency) * 1e3:.2f} / {_quantile(r.latency, 0.95) * 1e3:.2f} ms",
        )
    console.print(table)
    console.print(
        f"raw ZeroMQ submit round trip, no controller (n={len(rtt)}): "
        f"p50 {statistics.median(rtt) * 1e3:.3f} ms, p95 {_quantile(rtt, 0.95) * 1e3:.3f} ms, "
        f"{len(rtt) / sum(rtt):.0f} /s one at a time"
    )
    for r in results:
        console.print(
            f"{r.database}, {r.code}: {r.n} experiments in {r.span_s:.2f} s from first "
            f"proposal to last result; {r.total_s:.1f} s including start-up"
        )
    console.print(f"load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
