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

Usage:  python -m benchmarks.controller_overhead [--experiments N] [--instruments K]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from controller.runner import RunOptions, run
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiments", type=int, default=2000)
    ap.add_argument("--instruments", type=int, default=4)
    ap.add_argument("--round-trips", type=int, default=2000)
    ap.add_argument(
        "--prefetch", type=int, default=0, help="planner.prefetch of the campaign (default 0)"
    )
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "overhead.toml"
        insts = "".join(INSTRUMENT.format(i=i + 1) for i in range(args.instruments))
        path.write_text(
            CAMPAIGN.format(instruments=insts, budget=args.experiments, prefetch=args.prefetch)
        )

        rtt = raw_round_trip(path, args.round_trips)

        db = f"sqlite:///{Path(tmp) / 'overhead.db'}"
        t0 = time.perf_counter()
        code = run(path, RunOptions(db_url=db, progress=False), Console(quiet=True))
        total = time.perf_counter() - t0
        assert code == 0, "the campaign did not reach its budget"
        n, span, latency, gaps = controller_numbers(db)

    table = Table(
        title=f"controller overhead ({args.instruments} instant instruments, random planner, "
        f"prefetch {args.prefetch})"
    )
    table.add_column("measure")
    table.add_column("p50", justify="right")
    table.add_column("p95", justify="right")
    table.add_column("rate", justify="right")
    table.add_row(
        f"raw ZeroMQ submit round trip (n={len(rtt)})",
        f"{statistics.median(rtt) * 1e3:.3f} ms",
        f"{_quantile(rtt, 0.95) * 1e3:.3f} ms",
        f"{len(rtt) / sum(rtt):.0f} /s (one at a time)",
    )
    table.add_row(
        f"controller: instrument idle between two actions (n={len(gaps)})",
        f"{statistics.median(gaps) * 1e3:.3f} ms",
        f"{_quantile(gaps, 0.95) * 1e3:.3f} ms",
        f"{n / span:.0f} experiments/s",
    )
    table.add_row(
        f"controller: experiment proposed -> result stored, less instrument time (n={n})",
        f"{statistics.median(latency) * 1e3:.3f} ms",
        f"{_quantile(latency, 0.95) * 1e3:.3f} ms",
        "",
    )
    console.print(table)
    console.print(
        f"campaign of {n} experiments: {span:.2f} s from first proposal to last result; "
        f"{total:.1f} s including start-up (Ray, server processes, planner actor)"
    )


if __name__ == "__main__":
    main()
