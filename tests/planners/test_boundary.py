"""Tests of the ``boundary`` phase-mapping planner (planners/boundary.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.errors import InvalidCampaignError, PlannerError
from models.objectives import Objective
from models.params import ContinuousParameter, ParamValue, SearchSpace
from models.records import Observation
from planners.base import Planner, make_planner
from planners.boundary import boundary_scores
from sim.phasemap import PhaseMapWorld
from surrogates.phase import PhasePrediction, fit_phase_classifier

WORLD = PhaseMapWorld()
SPACE = SearchSpace(
    parameters=[
        ContinuousParameter(name="x_b", lower=0.0, upper=1.0),
        ContinuousParameter(name="temperature_c", lower=300.0, upper=1100.0),
    ]
)
PHASE = [Objective(name="phase", direction="maximize")]


def tell(planner: Planner, points: list[dict[str, ParamValue]]) -> None:
    planner.tell(
        [
            Observation(
                parameters=p, objectives=WORLD.evaluate_true({k: float(v) for k, v in p.items()})
            )
            for p in points
        ]
    )


def started(seed: int = 0, n: int = 12, **options: object) -> Planner:
    planner = make_planner("boundary", SPACE, PHASE, seed=seed, options=options)
    tell(planner, [dict(p.parameters) for p in planner.ask(n).proposals])
    return planner


def map_accuracy(points: list[dict[str, ParamValue]], grid: np.ndarray) -> float:
    """Fraction of ``grid`` the classifier fitted to the true labels of ``points`` gets right."""
    lo, hi = WORLD.bounds
    x = np.array([[float(p["x_b"]), float(p["temperature_c"])] for p in points])
    model = fit_phase_classifier(
        torch.from_numpy((x - lo) / (hi - lo)), torch.from_numpy(WORLD.evaluate_array(x)), 4
    )
    predicted = model.predict_labels(torch.from_numpy((grid - lo) / (hi - lo))).numpy()
    return float((predicted == WORLD.evaluate_array(grid)).mean())


def unit_distance(p: dict[str, ParamValue], q: dict[str, ParamValue]) -> float:
    return math.hypot(
        float(p["x_b"]) - float(q["x_b"]),
        (float(p["temperature_c"]) - float(q["temperature_c"])) / 800.0,
    )


def test_initial_design_then_boundary_with_decision_record() -> None:
    planner = make_planner("boundary", SPACE, PHASE, seed=0)
    first = planner.ask(3)
    assert first.details["phase"] == "initial_design"
    tell(planner, [dict(p.parameters) for p in first.proposals])
    tell(planner, [dict(p.parameters) for p in planner.ask(9).proposals])
    decision = planner.ask(3)
    d = decision.details
    assert d["phase"] == "boundary"
    assert d["acquisition"] == "entropy"
    assert d["phase_objective"] == "phase"
    assert len(d["class_counts"]) == d["n_classes"] >= 2
    assert sum(d["class_counts"]) == 12 == decision.n_train == d["n_model"]
    assert set(d["hyperparameters"]) >= {"lengthscales", "outputscale", "extra_noise"}
    assert d["seconds_fit"] >= 0
    assert d["seconds_acq"] >= 0
    assert len(d["probabilities"]) == 3
    assert len(d["predicted_phase"]) == 3
    assert len(d["penalty_radii"]) == 2
    assert len(decision.candidate_scores) == 3
    assert all(0.0 <= s <= 1.0 for s in decision.candidate_scores)
    assert decision.candidate_scores[0] >= d["mean_score"]


def test_batch_is_in_bounds_and_spread_out() -> None:
    decision = started().ask(6)
    points = [dict(p.parameters) for p in decision.proposals]
    for p in points:
        SPACE.validate_point(p)
    radius = float(np.mean(decision.details["penalty_radii"]))
    gaps = [unit_distance(p, q) for i, p in enumerate(points) for q in points[:i]]
    assert min(gaps) > 0.3 * radius, (min(gaps), radius)


def test_pending_points_are_not_proposed_again() -> None:
    planner = started(seed=1)
    alone = dict(planner.ask(1).proposals[0].parameters)
    again = make_planner("boundary", SPACE, PHASE, seed=1)
    again.tell(planner.observations)
    decision = again.ask(1, pending=[alone])
    assert decision.n_pending == 1
    radius = float(np.mean(decision.details["penalty_radii"]))
    assert unit_distance(dict(decision.proposals[0].parameters), alone) > 0.3 * radius


def test_same_seed_same_state_same_decision() -> None:
    a, b = started(seed=4).ask(3), started(seed=4).ask(3)
    assert [p.parameters for p in a.proposals] == [p.parameters for p in b.proposals]
    assert a.candidate_scores == b.candidate_scores


def test_scores() -> None:
    probs = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    same = probs.expand(5, -1, -1)
    pred = PhasePrediction(probabilities=probs, latent_std=torch.ones(3, 4), samples=same)
    torch.testing.assert_close(boundary_scores(pred, "entropy", 0.0), torch.tensor([1.0, 0.0, 0.5]))
    torch.testing.assert_close(boundary_scores(pred, "margin", 0.0), torch.tensor([1.0, 0.0, 1.0]))
    # every draw equal: the label carries no information about the latents
    torch.testing.assert_close(boundary_scores(pred, "bald", 0.0), torch.zeros(3))
    damped = PhasePrediction(probabilities=probs, latent_std=torch.full((3, 4), 0.5), samples=same)
    torch.testing.assert_close(
        boundary_scores(damped, "entropy", 2.0), torch.tensor([0.25, 0.0, 0.125])
    )


def test_labels_out_of_range_name_the_experiment() -> None:
    planner = make_planner("boundary", SPACE, PHASE, options={"n_classes": 3, "initial_points": 2})
    planner.tell(
        [
            Observation(parameters={"x_b": 0.1, "temperature_c": 400.0}, objectives={"phase": 0}),
            Observation(
                parameters={"x_b": 0.9, "temperature_c": 400.0},
                objectives={"phase": 3},
                experiment_id="exp-7",
            ),
        ]
    )
    with pytest.raises(PlannerError, match=r"exp-7.*outside 0\.\.2"):
        planner.ask(1)


def test_labels_are_rounded_and_failures_skipped() -> None:
    planner = make_planner("boundary", SPACE, PHASE, options={"initial_points": 2})
    planner.tell(
        [
            Observation(
                parameters={"x_b": 0.1, "temperature_c": 400.0}, objectives={"phase": 0.02}
            ),
            Observation(
                parameters={"x_b": 0.9, "temperature_c": 400.0}, objectives={"phase": 0.97}
            ),
            Observation(
                parameters={"x_b": 0.5, "temperature_c": 400.0}, objectives={}, feasible=False
            ),
        ]
    )
    decision = planner.ask(1)
    assert decision.details["class_counts"] == [1, 1]


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"acquisition": "variance"}, "planner.options.acquisition"),
        ({"n_classes": 1}, "planner.options.n_classes"),
        ({"uncertainty_weight": -1}, "planner.options.uncertainty_weight"),
        ({"alpha_epsilon": 0}, "planner.options.alpha_epsilon"),
        ({"phase_objective": "colour"}, "planner.options.phase_objective"),
        ({"mc_points": 10}, "planner.options.mc_points"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, object], key: str) -> None:
    with pytest.raises(InvalidCampaignError, match=key.replace(".", r"\.")):
        make_planner("boundary", SPACE, PHASE, options=options)


def test_phase_objective_needed_with_several_objectives() -> None:
    two = [*PHASE, Objective(name="intensity", direction="maximize")]
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.phase_objective"):
        make_planner("boundary", SPACE, two)
    planner = make_planner("boundary", SPACE, two, options={"phase_objective": "phase"})
    assert planner.phase_objective == "phase"  # type: ignore[attr-defined]


@pytest.mark.slow
def test_maps_the_phase_diagram_better_than_random_with_the_same_classifier() -> None:
    """30 boundary-chosen experiments map 90 % of the diagram; 30 random ones fall well short
    (and 60 random ones about reach it)."""
    grid = WORLD.grid(50)
    planner = make_planner("boundary", SPACE, PHASE, seed=1)
    for _ in range(30):
        tell(planner, [dict(planner.ask(1).proposals[0].parameters)])
    chosen = [dict(o.parameters) for o in planner.observations]
    rng = np.random.default_rng(1)
    random = [
        {"x_b": float(u), "temperature_c": 300.0 + 800.0 * float(v)} for u, v in rng.random((60, 2))
    ]
    boundary_acc = map_accuracy(chosen, grid)
    random_30, random_60 = map_accuracy(random[:30], grid), map_accuracy(random, grid)
    print(
        f"map accuracy: boundary (30) {boundary_acc:.3f}, random (30) {random_30:.3f}, "
        f"random (60) {random_60:.3f}"
    )
    assert boundary_acc >= 0.9
    assert random_30 < boundary_acc - 0.04


def test_one_phase_seen_so_far_and_too_large_batches() -> None:
    planner = make_planner(
        "boundary", SPACE, PHASE, options={"initial_points": 3, "n_candidates": 16}
    )
    tell(planner, [{"x_b": 0.1, "temperature_c": t} for t in (310.0, 340.0, 380.0)])
    decision = planner.ask(2)
    assert decision.details["class_counts"] == [3, 0]  # a second latent for the unseen phases
    with pytest.raises(PlannerError, match=r"planner\.options\.n_candidates"):
        planner.ask(17)


def test_label_gaps_score_the_middle_of_a_label_change() -> None:
    from planners.boundary import _label_gaps

    x = torch.tensor([[0.1, 0.5], [0.9, 0.5]], dtype=torch.double)
    cand = torch.tensor([[0.5, 0.5], [0.3, 0.5], [0.12, 0.5]], dtype=torch.double)
    gaps = _label_gaps(cand, x, torch.tensor([0, 1]), 0.05)
    assert gaps[0] == pytest.approx(0.4 / 0.05)  # half the gap, in units of rho
    assert gaps[0] > gaps[1] > gaps[2] >= 0.0
    same = _label_gaps(cand, x, torch.tensor([1, 1]), 0.05)
    assert torch.equal(same, torch.zeros(3, dtype=torch.double))


def test_coverage_finds_a_pocket_inside_a_large_phase() -> None:
    from sim.pockets import PocketWorld

    world = PocketWorld(layout_seed=0)
    planner = make_planner(
        "boundary", SPACE, PHASE, seed=0, options={"explore_radius": 0.05, "fit_iterations": 30}
    )
    labels: list[int] = []
    picks = 0
    while len(labels) < 70:
        decision = planner.ask(10)
        picks += int(decision.details.get("explore_picks", 0))
        points = [dict(p.parameters) for p in decision.proposals]
        observed = [
            Observation(
                parameters=p, objectives=world.evaluate_true({k: float(v) for k, v in p.items()})
            )
            for p in points
        ]
        planner.tell(observed)
        labels += [int(o.objectives["phase"]) for o in observed]
    assert picks > 0
    assert any(label >= 3 for label in labels)  # a rare phase was measured
