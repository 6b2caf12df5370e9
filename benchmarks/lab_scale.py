"""Lab scale: several campaigns, each run by its own ``sdlab run`` process, sharing one lab.

Every run is what an operator would start: a lab file of simulated stations recorded with
``sdlab lab apply`` in a fresh PostgreSQL schema, one ``sdlab instruments serve`` gateway
hosting the stations for every campaign, and N campaigns that name the lab, each run by its
own controller process joining one Ray cluster started with ``ray start --head`` (and, for
the two-node figures, a second ``ray start --address`` on this machine that hosts the
planners). Lab stations are granted to steps across the controllers through the store
(``docs/deployment.md``). Everything is measured from what the store recorded, so the
processes' start-up is not counted.

Three figures:

1. **Throughput and planner time** for 1, 2, 4, 8 campaigns on instant stations
   (``duration_s = 0``) with a cheap planner (``random`` by default), so that the figure
   is the controllers', the gateway's and the store's work, not the science: experiments
   per second over the window in which every campaign was running (and the median of each
   campaign's own rate), each N beside the one-campaign figure of the same run; the p50 and
   p95 of the planner's own time per decision (``decisions.seconds``); and the latency an
   experiment spends outside its instrument (proposed to stored, less the step's time).
2. **The same on one and two Ray nodes**: on two, every planner is placed on the second
   node (``[planner.placement] resources = { planner_node = 1 }``), as a model node would
   host them.
3. **Instrument utilisation** when 3 campaigns share 4 stations whose steps take
   ``--step-s``: for each station, the fraction of the time during which some campaign had
   an experiment waiting for a station (written, its step not yet started) that the station
   spent running a step (its ``started_at`` .. ``finished_at``), with the idle gaps between
   two steps split by whether the next step came from the same campaign or another one.
   With ``--baseline DIR`` (another checkout of sdlab, e.g. ``git worktree add DIR main``)
   every utilisation run is made twice, alternately, its controllers and gateway running
   that checkout's code and this one's, ``--repeat`` times, so that both stand beside each
   other at the same load.

Usage:  python -m benchmarks.lab_scale [--campaigns 1,2,4,8] [--experiments N] [--quick]
        python -m benchmarks.lab_scale --utilisation-only --baseline DIR [--step-s 2]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from controller.store import make_engine, migrate, session_factory, transaction
from controller.store.lab import apply_lab
from models.lab import load_lab
from models.status import ExperimentStatus
from models.tables import CampaignRow, DecisionRow, ExperimentRow, StepRow
from tests.integration.lab_harness import (
    finish,
    fresh_schema,
    kill_tree,
    run_campaign,
    serve_lab,
    write_campaign,
    write_lab,
)
from tests.integration.ray_cluster import LocalRayCluster

DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/test"
PLANNER_NODE = "planner_node"
"""The custom Ray resource of the second node; two-node runs place every planner on it."""

Span = tuple[datetime, datetime]


@dataclass(frozen=True)
class Record:
    """What one run left in the store.

    Attributes:
        experiments: Per completed experiment: campaign, created at, finished at, the
            instrument of its step, and the step's start and end (instrument clock).
        planner_s: Every decision's planner time, in seconds.
    """

    experiments: list[tuple[str, datetime, datetime, str, datetime, datetime]]
    planner_s: list[float]


def read_record(db: str) -> Record:
    """Read the completed experiments, their steps and the decisions of every campaign."""
    engine = make_engine(db)
    try:
        with transaction(session_factory(engine), read_only=True) as s:
            rows = s.execute(
                select(
                    CampaignRow.name,
                    ExperimentRow.created_at,
                    ExperimentRow.finished_at,
                    StepRow.instrument,
                    StepRow.started_at,
                    StepRow.finished_at,
                )
                .join(ExperimentRow, ExperimentRow.campaign_id == CampaignRow.id)
                .join(StepRow, StepRow.experiment_id == ExperimentRow.id)
                .where(ExperimentRow.status == ExperimentStatus.COMPLETED)
            ).all()
            planner_s = [float(x) for x in s.scalars(select(DecisionRow.seconds))]
    finally:
        engine.dispose()
    exps = [
        (c, created, done, str(inst), st, fin)
        for c, created, done, inst, st, fin in rows
        if done is not None and st is not None and fin is not None
    ]
    return Record(exps, planner_s)


def quantile(xs: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``xs`` (nearest rank; ``nan`` when empty)."""
    if not xs:
        return float("nan")
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(q * len(ys)))]


# ---------------------------------------------------------------------- throughput


@dataclass(frozen=True)
class Throughput:
    """Figures of one throughput run (rates in experiments per second, times in ms)."""

    nodes: int
    campaigns: int
    experiments: int
    rate_all_running: float
    rate_per_campaign: float
    planner_p50_ms: float
    planner_p95_ms: float
    outside_p50_ms: float
    outside_p95_ms: float


def throughput(record: Record, nodes: int, campaigns: int) -> Throughput:
    """Rates over the window in which every campaign ran, and per campaign."""
    by_campaign: dict[str, list[tuple[datetime, datetime]]] = {}
    outside: list[float] = []
    for c, created, done, _inst, st, fin in record.experiments:
        by_campaign.setdefault(c, []).append((created, done))
        outside.append(((done - created) - (fin - st)).total_seconds())
    spans = {c: (min(a for a, _ in xs), max(b for _, b in xs)) for c, xs in by_campaign.items()}
    own = [len(by_campaign[c]) / max((b - a).total_seconds(), 1e-9) for c, (a, b) in spans.items()]
    start = max(a for a, _ in spans.values())
    end = min(b for _, b in spans.values())
    if (end - start).total_seconds() <= 0 or len(spans) < campaigns:  # no common window
        start = min(a for a, _ in spans.values())
        end = max(b for _, b in spans.values())
    done_in = sum(1 for _c, _a, b, *_ in record.experiments if start < b <= end)
    return Throughput(
        nodes=nodes,
        campaigns=campaigns,
        experiments=len(record.experiments),
        rate_all_running=done_in / max((end - start).total_seconds(), 1e-9),
        rate_per_campaign=statistics.median(own),
        planner_p50_ms=quantile(record.planner_s, 0.5) * 1e3,
        planner_p95_ms=quantile(record.planner_s, 0.95) * 1e3,
        outside_p50_ms=quantile(outside, 0.5) * 1e3,
        outside_p95_ms=quantile(outside, 0.95) * 1e3,
    )


# ---------------------------------------------------------------------- utilisation


def union(spans: Sequence[Span]) -> list[Span]:
    """The union of ``spans`` as sorted, disjoint spans."""
    out: list[Span] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def overlap_s(xs: Sequence[Span], ys: Sequence[Span]) -> float:
    """Seconds that two sets of disjoint, sorted spans have in common."""
    total, i, j = 0.0, 0, 0
    while i < len(xs) and j < len(ys):
        a, b = max(xs[i][0], ys[j][0]), min(xs[i][1], ys[j][1])
        if b > a:
            total += (b - a).total_seconds()
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return total


@dataclass(frozen=True)
class Utilisation:
    """One instrument's share of the time work waited (times in s, gaps in ms)."""

    code: str
    lab_poll_s: float
    instrument: str
    steps: int
    campaigns: int
    busy_s: float
    waiting_s: float
    fraction: float
    fraction_started: float
    gap_same_p50_ms: float
    gap_other_p50_ms: float
    handoffs: int


def utilisation(record: Record, lab_poll_s: float, code: str = "this") -> list[Utilisation]:
    """Each instrument's busy time while some campaign had an experiment waiting to start.

    An experiment waits from the moment it is written (``created_at``) until its step
    starts; the union of those spans, over every campaign, is when work waited. The first
    proposals of a campaign are written while its controller is still starting (connecting
    to the instruments, recovering, restoring its grants); ``fraction_started`` counts an
    experiment as waiting only from its campaign's first step on, when its controller
    dispatches.
    """
    waiting = union([(created, st) for _c, created, _d, _i, st, _f in record.experiments])
    waiting_s = sum((b - a).total_seconds() for a, b in waiting)
    begun: dict[str, datetime] = {}
    for c, _created, _d, _i, st, _f in record.experiments:
        begun[c] = min(begun.get(c, st), st)
    started = union(
        [
            (max(created, begun[c]), st)
            for c, created, _d, _i, st, _f in record.experiments
            if st > max(created, begun[c])
        ]
    )
    started_s = sum((b - a).total_seconds() for a, b in started)
    by_inst: dict[str, list[tuple[datetime, datetime, str]]] = {}
    for c, _created, _d, inst, st, fin in record.experiments:
        by_inst.setdefault(inst, []).append((st, fin, c))
    out = []
    for inst, steps in sorted(by_inst.items()):
        steps.sort()
        busy = union([(a, b) for a, b, _ in steps])
        same: list[float] = []
        other: list[float] = []
        for (_a0, b0, c0), (a1, _b1, c1) in itertools.pairwise(steps):
            (same if c0 == c1 else other).append((a1 - b0).total_seconds())
        out.append(
            Utilisation(
                code=code,
                lab_poll_s=lab_poll_s,
                instrument=inst,
                steps=len(steps),
                campaigns=len({c for _, _, c in steps}),
                busy_s=sum((b - a).total_seconds() for a, b in busy),
                waiting_s=waiting_s,
                fraction=overlap_s(busy, waiting) / waiting_s if waiting_s > 0 else float("nan"),
                fraction_started=(
                    overlap_s(busy, started) / started_s if started_s > 0 else float("nan")
                ),
                gap_same_p50_ms=quantile(same, 0.5) * 1e3,
                gap_other_p50_ms=quantile(other, 0.5) * 1e3,
                handoffs=len(other),
            )
        )
    return out


# ---------------------------------------------------------------------- running


@contextlib.contextmanager
def ray_cluster(num_cpus: int) -> Iterator[LocalRayCluster]:
    """A Ray head node on this machine (``ray start --head``), shut down afterwards."""
    cluster = LocalRayCluster()
    try:
        cluster.start_head(num_cpus=num_cpus)
        yield cluster
    finally:
        cluster.shutdown()


def record_lab(lab: Path, db: str) -> None:
    """Record the lab file in the store, as ``sdlab lab apply`` does (without its start-up)."""
    engine = make_engine(db)
    try:
        migrate(engine)
        with transaction(session_factory(engine)) as s:
            apply_lab(s, load_lab(lab), str(lab))
    finally:
        engine.dispose()


def run_lab(
    cluster: LocalRayCluster,
    work: Path,
    db_server: str,
    *,
    campaigns: int,
    experiments: int,
    stations: int,
    step_s: float,
    planner: str,
    on_planner_node: bool,
    timeout_s: float,
    lab_poll_s: float | None = None,
) -> Record:
    """Run ``campaigns`` controllers on one lab to their budgets; returns what they stored.

    Raises:
        RuntimeError: If a controller or the gateway failed (its output is in the message).
    """
    started = time.monotonic()
    work.mkdir(parents=True)
    lab = write_lab(work, None, stations=stations, duration_s=step_s)
    files = [
        write_campaign(
            work,
            f"campaign-{i + 1}",
            i + 1,
            budget=experiments,
            planner=planner,
            arm=False,
            planner_resources={PLANNER_NODE: 1} if on_planner_node else None,
        )
        for i in range(campaigns)
    ]
    with fresh_schema(db_server) as db, serve_lab(lab, work):
        record_lab(lab, db)
        procs: list[subprocess.Popen[str]] = []
        try:
            for f in files:
                extra = ["--lab-poll-s", str(lab_poll_s)] if lab_poll_s is not None else []
                procs.append(
                    run_campaign(f, db, cluster.address, work, env=cluster.env(), extra=extra)
                )
            for p in procs:
                finish(p, timeout_s)
        finally:
            for p in procs:
                if p.poll() is None:
                    kill_tree(p)
        record = read_record(db)
    print(
        f"{work.name}: {campaigns} campaign(s), {len(record.experiments)} experiments, "
        f"{time.monotonic() - started:.0f} s with start-up",
        file=sys.stderr,
        flush=True,
    )
    return record


def throughput_table(rows: list[Throughput]) -> str:
    """The markdown table of the throughput runs, each beside its node count's N = 1."""
    base = {r.nodes: r.rate_all_running for r in rows if r.campaigns == 1}
    lines = [
        "| Ray nodes | campaigns | experiments | exp/s, all campaigns | vs 1 campaign "
        "| exp/s per campaign (median) | planner p50 / p95 (ms) "
        "| outside the instrument p50 / p95 (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = base.get(r.nodes)
        vs = f"{r.rate_all_running / ref:.2f}x" if ref else "-"
        lines.append(
            f"| {r.nodes} | {r.campaigns} | {r.experiments} | {r.rate_all_running:.1f} | {vs} "
            f"| {r.rate_per_campaign:.1f} | {r.planner_p50_ms:.2f} / {r.planner_p95_ms:.2f} "
            f"| {r.outside_p50_ms:.0f} / {r.outside_p95_ms:.0f} |"
        )
    return "\n".join(lines)


def utilisation_table(rows: list[Utilisation]) -> str:
    """The markdown table of the utilisation runs: a row per instrument, a mean per run."""
    lines = [
        "| code | lab poll (s) | instrument | steps | campaigns | busy (s) | work waiting (s) "
        "| utilisation | utilisation from each campaign's first step "
        "| idle gap p50, same campaign (ms) | idle gap p50, other campaign (ms) | hand-overs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    runs: dict[tuple[str, float], list[Utilisation]] = {}
    for u in rows:
        runs.setdefault((u.code, u.lab_poll_s), []).append(u)
    for (code, poll), run in runs.items():
        for u in run:
            lines.append(
                f"| {code} | {poll:g} | {u.instrument} | {u.steps} | {u.campaigns} "
                f"| {u.busy_s:.1f} | {u.waiting_s:.1f} | {u.fraction:.1%} "
                f"| {u.fraction_started:.1%} | {u.gap_same_p50_ms:.0f} "
                f"| {u.gap_other_p50_ms:.0f} | {u.handoffs} |"
            )
        mean = statistics.fmean(u.fraction for u in run)
        mean_started = statistics.fmean(u.fraction_started for u in run)
        lines.append(
            f"| {code} | {poll:g} | mean | | | | | {mean:.1%} | {mean_started:.1%} | | | |"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def code_of(checkout: Path | None) -> Iterator[None]:
    """Run the processes started in the block (Ray nodes, gateways, controllers) on the
    code of ``checkout`` (``None``: this one's)."""
    if checkout is None:
        yield
        return
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(checkout.resolve())
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,2,4: {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers like 1,2,4: {text!r}")
    return values


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected seconds like 0.25,0.02: {text!r}") from exc
    if not values or min(values) < 0.005:
        raise argparse.ArgumentTypeError(f"expected seconds of at least 0.005: {text!r}")
    return values


def measure(args: argparse.Namespace) -> tuple[list[Throughput], list[Utilisation]]:
    """Run the throughput and utilisation runs that ``args`` ask for."""
    timeout_s = 600.0
    rows: list[Throughput] = []
    util: list[Utilisation] = []
    # Each node offers one CPU per planner actor it may host (Ray starts worker processes up
    # to its CPU count; more would only crowd the two cores).
    cpus = max([*args.campaigns, 3]) + 1
    with tempfile.TemporaryDirectory(prefix="labscale") as tmp:
        if 1 in args.nodes and not args.utilisation_only:
            with ray_cluster(cpus) as cluster:
                for n in args.campaigns:
                    rec = run_lab(
                        cluster, Path(tmp) / f"n{n}", args.db, campaigns=n,
                        experiments=args.experiments, stations=args.instruments, step_s=0.0,
                        on_planner_node=False, planner=args.planner, timeout_s=timeout_s,
                    )  # fmt: skip
                    rows.append(throughput(rec, 1, n))
        if 1 in args.nodes or args.utilisation_only:
            codes = [("baseline", args.baseline), ("this", None)] if args.baseline else []
            codes = codes or [("this", None)]
            for k in range(args.repeat):
                for code, checkout in codes:
                    with code_of(checkout), ray_cluster(cpus) as cluster:
                        for poll in args.lab_poll_s:
                            rec = run_lab(
                                cluster, Path(tmp) / f"util-{code}-{poll:g}-{k}", args.db,
                                campaigns=3, experiments=args.util_experiments, stations=4,
                                step_s=args.step_s, on_planner_node=False,
                                planner=args.planner, timeout_s=timeout_s, lab_poll_s=poll,
                            )  # fmt: skip
                            util += utilisation(rec, poll, code)
        if 2 in args.nodes and not args.utilisation_only:
            with ray_cluster(cpus) as cluster:
                planners = {PLANNER_NODE: float(cpus)}
                cluster.add_worker("planners", "127.0.0.2", resources=planners, num_cpus=cpus)
                for n in args.campaigns:
                    rec = run_lab(
                        cluster, Path(tmp) / f"two-n{n}", args.db, campaigns=n,
                        experiments=args.experiments, stations=args.instruments, step_s=0.0,
                        on_planner_node=True, planner=args.planner, timeout_s=timeout_s,
                    )  # fmt: skip
                    rows.append(throughput(rec, 2, n))
    return rows, util


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its tables; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--campaigns", type=_ints, default=[1, 2, 4, 8], help="e.g. 1,2,4,8")
    ap.add_argument("--nodes", type=_ints, default=[1, 2], help="Ray node counts: 1, 2 or 1,2")
    ap.add_argument("--experiments", type=int, default=150, help="per campaign (throughput)")
    ap.add_argument("--instruments", type=int, default=4, help="lab stations (throughput)")
    ap.add_argument("--planner", default="random", help="a cheap planner: random or sobol")
    ap.add_argument("--util-experiments", type=int, default=40, help="per campaign")
    ap.add_argument("--step-s", type=float, default=0.2, help="step time in the utilisation run")
    ap.add_argument(
        "--lab-poll-s",
        type=_floats,
        default=[0.02],
        help="sdlab run --lab-poll-s of each utilisation run (on PostgreSQL a controller is "
        "woken by the lab's notifications and polls only while it cannot listen)",
    )
    ap.add_argument("--db", default=DEFAULT_DB, help="PostgreSQL server (a schema per run)")
    ap.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another sdlab checkout whose code the utilisation runs also measure, alternately",
    )
    ap.add_argument("--repeat", type=int, default=1, help="utilisation runs per code (>= 1)")
    ap.add_argument("--utilisation-only", action="store_true", help="skip the throughput runs")
    ap.add_argument("--quick", action="store_true", help="a small run (for the smoke test)")
    args = ap.parse_args(argv)
    if set(args.nodes) - {1, 2}:
        ap.error("--nodes: only 1 and 2 Ray nodes are supported")
    if args.repeat < 1:
        ap.error("--repeat: at least 1")
    if args.baseline is not None and not (args.baseline / "controller" / "cli.py").is_file():
        ap.error(f"--baseline: {args.baseline} is not an sdlab checkout")
    if args.quick:
        args.campaigns, args.nodes, args.lab_poll_s = [1], [1, 2], [0.02]
        args.experiments, args.util_experiments = 4, 4
    # A terminated benchmark still stops its controllers, gateways and Ray nodes.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        rows, util = measure(args)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if rows:
        print(
            f"## Throughput: {args.instruments} instant lab stations shared by every campaign, "
            f"{args.planner} planner, {args.experiments} experiments per campaign\n"
        )
        print(throughput_table(rows))
    if util:
        print(
            f"\n## Utilisation: 3 campaigns share 4 lab stations, steps of {args.step_s:g} s, "
            f"{args.util_experiments} experiments per campaign, for each --lab-poll-s"
            + (f"; baseline: {args.baseline}" if args.baseline else "")
            + "\n"
        )
        print(utilisation_table(util))
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
