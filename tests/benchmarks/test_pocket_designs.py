"""The geometry-only pocket designs (benchmarks/pocket_designs.py) on one layout."""

from __future__ import annotations

import pytest

from benchmarks.pocket_designs import RULES, main, run_design


@pytest.mark.parametrize("rule", RULES)
def test_each_rule_measures_every_phase_of_layout_0_within_100(rule: str) -> None:
    accuracy, counts = run_design(0, 0.1, rule, [60, 100])
    assert sum(counts[60]) == 60
    assert sum(counts[100]) == 100
    assert all(c > 0 for c in counts[100])  # the three pockets (phases 3-5) among them
    assert 0.85 < accuracy[100] <= 1.0
    assert accuracy[100] > accuracy[60]


def test_the_two_rules_differ_and_the_report_names_them(capsys: pytest.CaptureFixture) -> None:
    assert run_design(0, 0.1, "max", [60])[1] != run_design(0, 0.1, "cover-first", [60])[1]
    main(["--layouts", "1", "--radii", "0.1", "--checkpoints", "40", "--diagnose", "40"])
    out = capsys.readouterr().out
    assert "max, rho = 0.1:" in out
    assert "cover-first, rho = 0.1:" in out
    assert "points in the pockets" in out
