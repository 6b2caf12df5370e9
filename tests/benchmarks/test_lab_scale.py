"""The lab-scale benchmark: its figures from hand-made records, and a ``--quick`` run."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from benchmarks.lab_scale import (
    Record,
    main,
    overlap_s,
    throughput,
    union,
    utilisation,
    utilisation_table,
)
from tests.conftest import _postgres_problem, postgres_test_url

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def test_union_merges_overlapping_spans_and_overlap_counts_common_seconds() -> None:
    spans = union([(at(2), at(3)), (at(0), at(1)), (at(0.5), at(1.5))])
    assert spans == [(at(0), at(1.5)), (at(2), at(3))]
    assert overlap_s(spans, [(at(1), at(2.5))]) == pytest.approx(1.0)


def test_utilisation_counts_busy_time_only_while_work_waits() -> None:
    # Two campaigns, one instrument. Work waits from 0 to 3 s (B's experiment was written
    # at 0 and started at 3); the instrument ran A's step from 0 to 2: 2 s of 3 busy.
    record = Record(
        experiments=[
            ("a", at(0), at(2), "station-1", at(0), at(2)),
            ("b", at(0), at(4), "station-1", at(3), at(4)),
        ],
        planner_s=[0.001],
    )
    (u,) = utilisation(record, 0.25, "main")
    assert (u.code, u.instrument) == ("main", "station-1")
    assert (u.steps, u.campaigns, u.handoffs) == (2, 2, 1)
    assert u.waiting_s == pytest.approx(3.0)
    assert u.fraction == pytest.approx(2 / 3)
    assert u.gap_other_p50_ms == pytest.approx(1000.0)
    # counted from each campaign's first step on, nothing waited: B's only experiment is
    # its first step
    assert math.isnan(u.fraction_started)


def test_utilisation_from_the_first_step_leaves_out_a_controller_starting() -> None:
    # A's controller starts: its experiments are written at 0 s, its first step runs at
    # 1 s (to 2 s), its second waits from 0 s and runs 3 to 4 s: busy 1 of the 3 s work
    # waited, and 1 of the 2 s it waited once A dispatched (from 1 s to 3 s).
    record = Record(
        experiments=[
            ("a", at(0), at(2), "station-1", at(1), at(2)),
            ("a", at(0), at(4), "station-1", at(3), at(4)),
        ],
        planner_s=[],
    )
    (u,) = utilisation(record, 0.02)
    assert u.waiting_s == pytest.approx(3.0)
    assert u.fraction == pytest.approx(1 / 3)
    assert u.fraction_started == pytest.approx(1 / 2)


def test_throughput_counts_the_window_in_which_every_campaign_ran() -> None:
    # A runs 0..10 s (10 experiments), B 5..10 s (5): both ran from 5 to 10 s, when A
    # finished 5 experiments and B 5; each campaign did one per second on its own.
    exps = [("a", at(k), at(k + 1), "s", at(k), at(k + 1)) for k in range(10)]
    exps += [("b", at(5 + k), at(6 + k), "s", at(5 + k), at(6 + k)) for k in range(5)]
    t = throughput(Record(exps, [0.002, 0.004]), nodes=1, campaigns=2)
    assert t.experiments == 15
    assert t.rate_all_running == pytest.approx(10 / 5)
    assert t.rate_per_campaign == pytest.approx(1.0)
    assert (t.planner_p50_ms, t.planner_p95_ms) == pytest.approx((4.0, 4.0))
    assert t.outside_p50_ms == pytest.approx(0.0)


def test_campaign_lists_are_checked() -> None:
    with pytest.raises(SystemExit):
        main(["--campaigns", "0,2"])


def test_a_baseline_must_be_a_checkout(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--utilisation-only", "--baseline", str(tmp_path)])


def test_the_baseline_and_this_code_each_get_their_rows_and_mean() -> None:
    # b's experiment waits from 0 to 2 s; a's step keeps the station busy all that time,
    # or (the baseline) only for its first second
    later = ("b", at(0), at(3), "station-1", at(2), at(3))
    busy = [("a", at(0), at(2), "station-1", at(0), at(2)), later]
    half = [("a", at(0), at(1), "station-1", at(0), at(1)), later]
    rows = utilisation(Record(half, []), 0.02, "baseline")
    rows += utilisation(Record(busy, []), 0.02, "this")
    table = utilisation_table(rows)
    means = [r.split("|")[1:10] for r in table.splitlines() if "| mean |" in r]
    assert [(m[0].strip(), m[7].strip()) for m in means] == [
        ("baseline", "50.0%"),
        ("this", "100.0%"),
    ]


@pytest.mark.slow
@pytest.mark.benchmark  # five sdlab run processes, three gateways, two Ray nodes: minutes
@pytest.mark.postgres
def test_quick_run_prints_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    url = postgres_test_url()
    if (problem := _postgres_problem(url)) is not None:
        pytest.skip(f"PostgreSQL not reachable: {problem}")
    assert main(["--quick", "--db", url]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    header = [r for r in rows if r.startswith("| Ray nodes")]
    assert len(header) == 1
    figures = [r.split("|")[1:3] for r in rows if r.split("|")[1].strip() in {"1", "2"}]
    assert [(n.strip(), c.strip()) for n, c in figures] == [("1", "1"), ("2", "1")]
    util = [r.split("|")[1:4] for r in rows if r.split("|")[2].strip() == "0.02"]
    stations = ["station-1", "station-2", "station-3", "station-4", "mean"]
    assert [(c.strip(), i.strip()) for c, _, i in util] == [("this", s) for s in stations]
