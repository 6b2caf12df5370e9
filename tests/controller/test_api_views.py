"""A planner decision told in words, as the campaign page shows it."""

from __future__ import annotations

from typing import Any

from controller.api.views import decision_words
from models.tables import DecisionRow


def _decision(**kw: Any) -> DecisionRow:
    values: dict[str, Any] = {
        "planner": "qlognei",
        "version": "1",
        "seed": 0,
        "n_train": 12,
        "n_pending": 2,
        "n_proposed": 1,
        "candidate_scores": [],
        "details": {},
        "seconds": 1.234,
    }
    values.update(kw)
    return DecisionRow(**values)


def test_initial_design_in_words() -> None:
    text = decision_words(
        _decision(n_train=3, details={"phase": "initial_design", "initial_points": 8})
    )
    assert text.startswith("The qlognei planner (v1) proposed 1 new point from 3 finished")
    assert "knowing 2 more still running" in text
    assert "initial space-filling design of 8 points" in text
    assert "Deciding took 1.23 s." in text


def test_bayesopt_in_words() -> None:
    text = decision_words(
        _decision(
            n_proposed=2,
            candidate_scores=[-0.5, -1.5],
            details={"phase": "bayesopt", "n_feasible": 11, "best_observed": 3.14159},
        )
    )
    assert "proposed 2 new points from 12 finished experiments" in text
    assert "Gaussian-process model to 11 results (best so far 3.142)" in text
    assert "highest expected improvement" in text
    assert "best point: -0.5" in text


def test_model_free_planners_in_words() -> None:
    text = decision_words(_decision(planner="sobol", n_pending=0, n_train=1))
    assert "from 1 finished experiment." in text
    assert "space-filling design" in text
    assert "expected no particular outcome" in text
    other = decision_words(_decision(planner="custom", candidate_scores=[0.25, 2.5]))
    assert "The best candidate scored 2.5." in other


def test_alab_recipes_in_words() -> None:
    proposal = {
        "target": "Sr2TiO4",
        "precursors": "SrO+SrTiO3",
        "temperature_c": 1200.0,
        "origin": "retry_hotter",
        "remaining_driving_force_ev_per_atom": -0.0429,
        "predicted_intermediates": [],
    }
    text = decision_words(_decision(planner="alab", details={"proposals": [proposal]}))
    assert (
        "It chose Sr2TiO4 from SrO+SrTiO3 at 1200 °C (retry hotter; -0.043 eV/atom left to "
        "the target via no intermediate)." in text
    )
    done = decision_words(
        _decision(planner="alab", n_proposed=0, details={"finished": "Sr2TiO4: made: yield 0.9"})
    )
    assert "Nothing is left to try: Sr2TiO4: made: yield 0.9." in done
