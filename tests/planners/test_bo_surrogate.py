"""Tests of Bayesian optimisation with any surrogate (planners/bo_surrogate.py, planners/bo.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest
import torch
from botorch.test_functions import Hartmann

from models.errors import InvalidCampaignError
from models.objectives import Objective
from models.params import ContinuousParameter, ParamValue, SearchSpace
from models.records import Observation
from planners.base import Planner, make_planner

HARTMANN3 = Hartmann(dim=3)  # minimum -3.86278 at (0.1146, 0.5556, 0.8525)
HARTMANN3_MIN = -3.86278

# Small members and few epochs keep each campaign to seconds on one CPU core.
MLP = {"n_members": 3, "epochs": 40, "hidden": [32, 32], "batch_size": 8}
RF = {"n_estimators": 40}
# with a handful of points an epoch is one step: many epochs, a higher learning rate
MLP_BOWL = {"n_members": 3, "epochs": 150, "hidden": [32, 32], "batch_size": 8, "lr": 5e-3}
FAST = {"num_restarts": 4, "raw_samples": 128, "maxiter": 50, "mc_samples": 64}


@pytest.fixture
def cube3() -> SearchSpace:
    """The unit cube of Hartmann-3."""
    return SearchSpace(
        parameters=[ContinuousParameter(name=f"x{i}", lower=0.0, upper=1.0) for i in range(3)]
    )


def hartmann3(point: Mapping[str, ParamValue]) -> float:
    """Noise-free Hartmann-3 value at a point."""
    x = torch.tensor([[float(point[f"x{i}"]) for i in range(3)]], dtype=torch.double)
    return float(HARTMANN3.evaluate_true(x))


def best_after(planner: Planner, evaluations: int) -> float:
    """Ask one point at a time, tell its value; the best (lowest) value found."""
    best = math.inf
    for _ in range(evaluations):
        point = dict(planner.ask(1).proposals[0].parameters)
        y = hartmann3(point)
        best = min(best, y)
        planner.tell([Observation(parameters=point, objectives={"y": y})])
    return best


def surrogate_bo(space: SearchSpace, surrogate: str, opts: dict[str, Any], seed: int) -> Planner:
    options = {
        "surrogate": surrogate,
        "surrogate_options": opts,
        "initial_points": 6,
        **FAST,
    }
    return make_planner(
        "bo", space, [Objective(name="y", direction="minimize")], seed=seed, options=options
    )


BOWL_CENTRE = (0.3, 0.7, 0.55, 0.4)


def bowl(point: Mapping[str, ParamValue]) -> float:
    """Noise-free squared distance to an interior point of the 4-D unit cube (minimum 0)."""
    return sum((float(point[f"x{i}"]) - c) ** 2 for i, c in enumerate(BOWL_CENTRE))


def best_on_bowl(planner: Planner, evaluations: int) -> float:
    best = math.inf
    for _ in range(evaluations):
        point = dict(planner.ask(1).proposals[0].parameters)
        y = bowl(point)
        best = min(best, y)
        planner.tell([Observation(parameters=point, objectives={"y": y})])
    return best


@pytest.mark.parametrize(("surrogate", "opts"), [("mlp_ensemble", MLP_BOWL), ("rf", RF)])
def test_surrogate_bo_beats_random(surrogate: str, opts: dict[str, Any]) -> None:
    cube4 = SearchSpace(
        parameters=[ContinuousParameter(name=f"x{i}", lower=0.0, upper=1.0) for i in range(4)]
    )
    objective = [Objective(name="y", direction="minimize")]
    gaps_bo, gaps_random = [], []
    for seed in range(3):
        gaps_bo.append(best_on_bowl(surrogate_bo(cube4, surrogate, opts, seed), 16))
        gaps_random.append(best_on_bowl(make_planner("random", cube4, objective, seed=seed), 16))
    print(f"{surrogate}: gaps {gaps_bo}, random {gaps_random}")
    assert sum(gaps_bo) < 0.5 * sum(gaps_random)
    # closer than random search on most seeds, not only on average
    assert sum(b < r for b, r in zip(gaps_bo, gaps_random, strict=True)) >= 2


def test_rf_bo_beats_random_on_hartmann3(cube3: SearchSpace) -> None:
    objective = [Objective(name="y", direction="minimize")]
    gaps_bo, gaps_random = [], []
    for seed in range(3):
        gaps_bo.append(best_after(surrogate_bo(cube3, "rf", RF, seed), 18) - HARTMANN3_MIN)
        rand = make_planner("random", cube3, objective, seed=seed)
        gaps_random.append(best_after(rand, 18) - HARTMANN3_MIN)
    print(f"rf on Hartmann-3: gaps {gaps_bo}, random {gaps_random}")
    assert sum(gaps_bo) < sum(gaps_random)


def told(planner: Planner, n: int) -> Planner:
    unit = torch.quasirandom.SobolEngine(3, scramble=True, seed=7).draw(n, dtype=torch.double)
    points = [{f"x{i}": float(u[i]) for i in range(3)} for u in unit]
    planner.tell([Observation(parameters=p, objectives={"y": hartmann3(p)}) for p in points])
    return planner


def test_decision_records_surrogate_and_search(cube3: SearchSpace) -> None:
    mlp = told(surrogate_bo(cube3, "mlp_ensemble", MLP, 0), 30).ask(2)
    assert mlp.details["phase"] == "bayesopt"
    assert mlp.details["surrogate"] == "mlp_ensemble"
    assert mlp.details["search"] == "continuous"  # a network has input gradients
    assert mlp.details["calibration_scale"] > 0  # 30 points: recalibrated on 6 held out
    rf = told(surrogate_bo(cube3, "rf", {**RF, "recalibrate": False}, 0), 12).ask(2)
    assert rf.details["surrogate"] == "rf"
    assert rf.details["search"] == "sobol-candidates"  # trees have none
    assert rf.details["n_candidates"] == 2048  # the default surrogate_candidates
    for decision in (mlp, rf):
        points = [p.parameters for p in decision.proposals]
        assert all(0.0 <= float(v) <= 1.0 for p in points for v in p.values())
        assert all(math.isfinite(s) for s in decision.candidate_scores)
    rf_points = [tuple(sorted(p.parameters.items())) for p in rf.proposals]
    assert len(set(rf_points)) == 2  # distinct candidates (optimize_acqf_discrete, unique)


def test_deterministic(cube3: SearchSpace) -> None:
    for surrogate, opts in (("mlp_ensemble", MLP), ("rf", RF)):
        a = told(surrogate_bo(cube3, surrogate, opts, 3), 10).ask(2)
        b = told(surrogate_bo(cube3, surrogate, opts, 3), 10).ask(2)
        assert [p.parameters for p in a.proposals] == [p.parameters for p in b.proposals]
        assert a.candidate_scores == b.candidate_scores


def test_gp_surrogate_matches_shape_of_default(cube3: SearchSpace) -> None:
    decision = told(surrogate_bo(cube3, "gp", {"maxiter": 30}, 0), 10).ask(1)
    assert decision.details["surrogate"] == "gp"
    assert decision.details["search"] == "continuous"


def test_option_errors(cube3: SearchSpace) -> None:
    y = [Objective(name="y", direction="minimize")]
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.surrogate"):
        make_planner("bo", cube3, y, options={"surrogate": "no-such-model"})
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.surrogate_options\.epochs"):
        make_planner(
            "bo",
            cube3,
            y,
            options={"surrogate": "mlp_ensemble", "surrogate_options": {"epochs": 0}},
        )
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.surrogate"):
        make_planner(
            "bo",
            cube3,
            y,
            options={"surrogate": "rf", "surrogate_options": {"descriptor": "magpie"}},
        )
    two = [Objective(name="y", direction="minimize"), Objective(name="z", direction="minimize")]
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.surrogate.*one objective"):
        make_planner("bo", cube3, two, options={"surrogate": "rf"})
    constrained = [
        Objective(name="y", direction="minimize"),
        Objective.model_validate({"name": "c", "kind": "constraint", "upper": 1.0}),
    ]
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.surrogate"):
        make_planner("qlognei", cube3, constrained, options={"surrogate": "rf"})
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.surrogate_candidates"):
        make_planner("bo", cube3, y, options={"surrogate": "rf", "surrogate_candidates": 1})
