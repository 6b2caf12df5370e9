"""The asynchronous planner benchmark (benchmarks/async_planners.py): pending experiments
as two stations make them, noise as the stations add it, scores from the truth."""

from __future__ import annotations

import pytest

from benchmarks.async_planners import DEFAULT_CAMPAIGN, run_campaign, table
from models.campaign_file import load_campaign


def test_two_stations_ask_with_one_pending_and_sobol_is_unchanged_by_it() -> None:
    spec = load_campaign(DEFAULT_CAMPAIGN)
    data = spec.model_dump()
    data["planner"] = {"name": "sobol"}
    spec = type(spec).model_validate(data)
    two = run_campaign(spec, 1, 6, stations=2, noisy=True)
    one = run_campaign(spec, 1, 6, stations=1, noisy=False)
    # the first ask has nothing pending, every later one the other station's experiment
    assert two.pending_per_ask == pytest.approx(5 / 6)
    assert one.pending_per_ask == 0
    # Sobol's n-th point is the n-th of its sequence whether or not the others are pending:
    # the same points, so the same noise-free best; the measured best carries the noise
    assert two.best_true == pytest.approx(one.best_true)
    assert one.best_measured == pytest.approx(one.best_true)
    assert two.best_measured != two.best_true
    assert abs(two.best_measured - two.best_true) < 0.1  # noise std 0.01
    text = table([two, one], 6, "demo")
    assert "| async | 1 |" in text
    assert "| sequential | 1 |" in text


def test_an_option_override_reaches_the_planner_and_a_bad_one_is_refused() -> None:
    from benchmarks.async_planners import with_options
    from controller.planning import build_planner

    spec = load_campaign(DEFAULT_CAMPAIGN)
    changed = with_options(spec, ['gp_priors="botorch"', "initial_points=5"])
    planner = build_planner(changed, 1)
    assert planner.options.gp_priors == "botorch"  # type: ignore[attr-defined]
    assert planner.initial_points == 5  # type: ignore[attr-defined]
    assert spec.planner.options == {"initial_points": 8}  # the file's spec is unchanged
    with pytest.raises(ValueError, match="KEY=VALUE"):
        with_options(spec, ["gp_priors"])
