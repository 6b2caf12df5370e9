"""Tests of the qLogNEI Bayesian-optimisation planner (planners/bo.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest
import torch
from botorch.test_functions import Branin

from models.errors import InvalidCampaignError, PlannerError
from models.objectives import Objective
from models.params import CategoricalParameter, IntegerParameter, ParamValue, SearchSpace
from models.records import Observation
from planners.base import Planner, make_planner
from planners.bo import QLogNEIPlanner
from planners.encoding import SpaceEncoder

BRANIN = Branin()  # minimum 0.397887 at three points


def branin(point: Mapping[str, ParamValue]) -> float:
    """Noise-free Branin value at a point of the Branin space."""
    x = torch.tensor([[float(point["x1"]), float(point["x2"])]], dtype=torch.double)
    return float(BRANIN.evaluate_true(x))


def run_sequential(planner: Planner, evaluations: int) -> float:
    """Ask one point at a time, tell its Branin value; return the best value found."""
    best = math.inf
    for _ in range(evaluations):
        decision = planner.ask(1)
        point = dict(decision.proposals[0].parameters)
        y = branin(point)
        best = min(best, y)
        planner.tell([Observation(parameters=point, objectives={"y": y})])
    return best


def told(planner: Planner, points: list[dict[str, float]]) -> Planner:
    planner.tell([Observation(parameters=p, objectives={"y": branin(p)}) for p in points])
    return planner


GRID = [{"x1": x1, "x2": x2} for x1 in (-5.0, 0.0, 5.0, 10.0) for x2 in (0.0, 7.5, 15.0)]


def test_beats_sobol_on_branin(branin_space: SearchSpace, minimize_y: list[Objective]) -> None:
    sobol_best = run_sequential(make_planner("sobol", branin_space, minimize_y, seed=0), 20)
    bo = make_planner("qlognei", branin_space, minimize_y, seed=0)
    bo_best = run_sequential(bo, 20)
    print(f"best after 20: qlognei {bo_best:.4f}, sobol {sobol_best:.4f}")
    assert bo_best < sobol_best
    assert bo_best < 0.397887 + 0.5  # close to the global minimum
    phases = [bo.ask(1).details["phase"]]
    assert phases == ["bayesopt"]


def test_initial_design_then_bayesopt(
    branin_space: SearchSpace, minimize_y: list[Objective]
) -> None:
    planner = QLogNEIPlanner(branin_space, minimize_y, seed=1, initial_points=5)
    first = planner.ask(3)
    assert first.details["phase"] == "initial_design"
    points = [dict(p.parameters) for p in first.proposals]
    # the initial design is the Sobol planner's sequence, and pending points count
    sobol = make_planner("sobol", branin_space, minimize_y, seed=1)
    assert points == [dict(p.parameters) for p in sobol.ask(3).proposals]
    second = planner.ask(2, pending=points)
    assert second.details["phase"] == "initial_design"
    told(planner, points + [dict(p.parameters) for p in second.proposals])
    decision = planner.ask(2)
    assert decision.details["phase"] == "bayesopt"
    assert decision.n_train == 5
    assert len(decision.proposals) == 2
    assert len(decision.candidate_scores) == 2
    scores = [p.score for p in decision.proposals]
    assert scores == list(decision.candidate_scores) == sorted(scores, reverse=True)  # type: ignore[type-var]
    hp = decision.details["hyperparameters"]
    assert len(hp["lengthscales"]) == 2
    assert len(hp["noise"]) == 1
    assert len(hp["outputscale"]) == 1
    assert all(isinstance(v, float) and v > 0 for v in hp["lengthscales"] + hp["noise"])
    assert decision.details["acquisition"] == "qLogNoisyExpectedImprovement"
    assert decision.details["seconds_fit"] >= 0
    assert decision.details["seconds_acq"] >= 0
    assert math.isfinite(decision.details["joint_acquisition_value"])
    best = min(branin(o.parameters) for o in planner.observations)
    assert decision.details["best_observed"] == pytest.approx(best)


def test_deterministic_for_same_seed_and_state(
    branin_space: SearchSpace, minimize_y: list[Objective]
) -> None:
    proposals = []
    for _ in range(2):
        planner = told(QLogNEIPlanner(branin_space, minimize_y, seed=7), GRID[:8])
        proposals.append([dict(p.parameters) for p in planner.ask(2).proposals])
    assert proposals[0] == proposals[1]


def test_pending_point_moves_next_proposal(
    branin_space: SearchSpace, minimize_y: list[Objective]
) -> None:
    planner = told(QLogNEIPlanner(branin_space, minimize_y, seed=2), GRID)
    enc = SpaceEncoder(branin_space)
    first = dict(planner.ask(1).proposals[0].parameters)
    again = dict(planner.ask(1).proposals[0].parameters)
    with_pending = dict(planner.ask(1, pending=[first]).proposals[0].parameters)
    # without the pending point the planner goes back to (nearly) the same place
    assert torch.dist(enc.encode([again]), enc.encode([first])).item() < 0.05
    # with it, it proposes somewhere else
    assert torch.dist(enc.encode([with_pending]), enc.encode([first])).item() > 0.1


def test_failed_observations_excluded_but_counted(
    branin_space: SearchSpace, minimize_y: list[Objective]
) -> None:
    planner = told(QLogNEIPlanner(branin_space, minimize_y, seed=3), GRID[:6])
    planner.tell(
        [
            Observation(parameters=p, objectives={}, feasible=False)
            for p in ({"x1": 1.0, "x2": 1.0}, {"x1": 2.0, "x2": 2.0})
        ]
    )
    decision = planner.ask(1)
    assert decision.details["phase"] == "bayesopt"
    assert decision.n_train == 8
    assert decision.details["n_feasible"] == 6
    assert decision.details["n_infeasible"] == 2


def test_only_failures_keep_initial_design(
    branin_space: SearchSpace, minimize_y: list[Objective]
) -> None:
    planner = QLogNEIPlanner(branin_space, minimize_y, initial_points=4)
    planner.tell([Observation(parameters=p, objectives={}, feasible=False) for p in GRID[:6]])
    decision = planner.ask(2)
    assert decision.details["phase"] == "initial_design"
    assert decision.details["sequence_start"] == 6


def test_mixed_space_proposals_in_bounds(mixed_space: SearchSpace) -> None:
    objective = [Objective(name="yield", direction="maximize")]
    planner = make_planner(
        "qlognei",
        mixed_space,
        objective,
        seed=4,
        options={"initial_points": 6, "num_restarts": 2, "raw_samples": 64},
    )

    def truth(p: Mapping[str, ParamValue]) -> float:
        t = (float(p["temperature_c"]) - 250.0) / 100.0
        bonus = {"water": 0.0, "ethanol": 0.5, "dmso": 0.2}[str(p["solvent"])]
        return -(t**2) + bonus - 0.1 * abs(int(p["layers"]) - 3) + math.log10(float(p["time_s"]))

    pending: list[dict[str, ParamValue]] = []
    for _ in range(5):
        decision = planner.ask(2, pending=pending)
        for proposal in decision.proposals:
            point = dict(proposal.parameters)
            assert mixed_space.validate_point(point) == point
        new = [dict(p.parameters) for p in decision.proposals]
        planner.tell([Observation(parameters=p, objectives={"yield": truth(p)}) for p in pending])
        pending = new
    assert decision.details["phase"] == "bayesopt"
    assert len(decision.details["hyperparameters"]["lengthscales"]) == 8


def test_discrete_space_reports_repeats() -> None:
    space = SearchSpace(
        parameters=[
            IntegerParameter(name="k", lower=0, upper=3),
            CategoricalParameter(name="c", choices=["a", "b"]),
        ]
    )
    planner = QLogNEIPlanner(space, [Objective(name="y", direction="maximize")], seed=0)
    planner.tell(
        [
            Observation(parameters={"k": k, "c": c}, objectives={"y": k + (c == "b")})
            for k in range(4)
            for c in ("a", "b")
        ]
    )
    decision = planner.ask(1)
    # every point of the space was observed, so the (rounded) proposal repeats one
    assert decision.details["n_repeats"] == 1
    assert space.validate_point(decision.proposals[0].parameters)


def test_several_objectives_rejected(branin_space: SearchSpace) -> None:
    objectives = [
        Objective(name="y", direction="minimize"),
        Objective(name="cost", direction="minimize"),
    ]
    with pytest.raises(PlannerError, match="exactly one objective") as info:
        make_planner("qlognei", branin_space, objectives)
    assert "'random'" in str(info.value)
    assert "'sobol'" in str(info.value)


def test_default_initial_points(branin_space: SearchSpace, mixed_space: SearchSpace) -> None:
    y = [Objective(name="y", direction="minimize")]
    assert QLogNEIPlanner(branin_space, y).initial_points == 4
    assert QLogNEIPlanner(mixed_space, y).initial_points == 10
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.initial_points"):
        QLogNEIPlanner(branin_space, y, initial_points=0)
