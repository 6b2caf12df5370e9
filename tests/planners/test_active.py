"""Tests of the ``uncertainty`` mapping planner and the shared base (planners/active.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest
import torch
from botorch.acquisition.active_learning import qNegIntegratedPosteriorVariance
from botorch.acquisition.objective import ScalarizedPosteriorTransform

from models.errors import InvalidCampaignError
from models.objectives import Objective
from models.params import (
    CategoricalParameter,
    ContinuousParameter,
    IntegerParameter,
    ParamValue,
    SearchSpace,
)
from models.records import Observation
from planners.active import UncertaintyPlanner, greedy_integrated_variance
from planners.base import Planner, make_planner
from planners.encoding import SpaceEncoder
from surrogates.gp import fit_single_task_gp, hyperparameters_of

SPACE = SearchSpace(
    parameters=[
        ContinuousParameter(name="a", lower=0.0, upper=1.0),
        ContinuousParameter(name="b", lower=-2.0, upper=2.0),
    ]
)
Y = [Objective(name="y", direction="maximize")]


def truth(p: Mapping[str, ParamValue]) -> float:
    return math.sin(6.0 * float(p["a"])) + 0.3 * float(p["b"])


def tell(planner: Planner, points: list[dict[str, ParamValue]]) -> None:
    planner.tell([Observation(parameters=p, objectives={"y": truth(p)}) for p in points])


def sobol_start(seed: int = 0, n: int = 6, **options: object) -> Planner:
    planner = make_planner("uncertainty", SPACE, Y, seed=seed, options=options)
    tell(planner, [dict(p.parameters) for p in planner.ask(n).proposals])
    return planner


def test_initial_design_is_the_sobol_sequence_and_counts_pending() -> None:
    planner = make_planner("uncertainty", SPACE, Y, seed=3, options={"initial_points": 5})
    sobol = make_planner("sobol", SPACE, Y, seed=3)
    first = planner.ask(3)
    assert first.details["phase"] == "initial_design"
    assert [p.parameters for p in first.proposals] == [p.parameters for p in sobol.ask(3).proposals]
    pending = [dict(p.parameters) for p in first.proposals]
    second = planner.ask(2, pending=pending)
    assert second.details["phase"] == "initial_design"
    assert second.details["sequence_start"] == 3
    tell(planner, pending + [dict(p.parameters) for p in second.proposals])
    assert planner.ask(1).details["phase"] == "uncertainty"


def test_batch_in_bounds_distinct_with_decision_record() -> None:
    planner = sobol_start()
    decision = planner.ask(4)
    points = [p.parameters for p in decision.proposals]
    assert len(points) == 4
    assert len({(p["a"], p["b"]) for p in points}) == 4
    for p in points:
        SPACE.validate_point(p)
    d = decision.details
    assert d["phase"] == "uncertainty"
    assert d["acquisition"] == "qNegIntegratedPosteriorVariance"
    assert decision.n_train == 6
    assert d["n_model"] == 6
    assert set(d["hyperparameters"]) >= {"lengthscales", "noise", "outcome_std"}
    assert d["seconds_fit"] >= 0
    assert d["seconds_acq"] >= 0
    assert d["n_candidates"] == 1024
    assert d["mc_points"] == 256
    assert len(d["posterior_std"]) == 4
    # each greedy pick lowers the integrated variance further
    scores = list(decision.candidate_scores)
    assert len(scores) == 4
    assert scores == sorted(scores)
    assert -scores[0] < d["integrated_variance"]
    assert d["integrated_variance_after"] == pytest.approx(-scores[-1])


def test_scores_equal_botorch_qnipv() -> None:
    """The closed-form greedy scores are BoTorch's qNegIntegratedPosteriorVariance values."""
    planner = sobol_start(n=8)
    enc = SpaceEncoder(SPACE)
    obs = planner.observations
    x = enc.encode([o.parameters for o in obs])
    y = torch.tensor([[o.objectives["y"]] for o in obs], dtype=torch.double)
    model = fit_single_task_gp(x, y, bounds=enc.bounds(), device="cpu")
    gen = torch.Generator().manual_seed(0)
    choices = torch.rand(40, 2, generator=gen, dtype=torch.double)
    mc = torch.rand(64, 2, generator=gen, dtype=torch.double)
    pending = torch.rand(2, 2, generator=gen, dtype=torch.double)
    noise = hyperparameters_of(model)["noise"]
    with torch.no_grad():
        picked, scores, _ = greedy_integrated_variance(model, choices, mc, pending, 3, noise=noise)
        std = model.outcome_transform.stdvs.reshape(-1)
        acqf = qNegIntegratedPosteriorVariance(
            model,
            mc_points=mc,
            posterior_transform=ScalarizedPosteriorTransform(weights=std.reciprocal()),
            X_pending=pending,
        )
        # the first pick is the best single point given the pending ones
        values = acqf(choices.unsqueeze(1))
        assert picked[0] == int(values.argmax())
        torch.testing.assert_close(
            torch.tensor(scores[0], dtype=torch.double), values.max(), rtol=1e-6, atol=1e-9
        )
        acqf.set_X_pending(torch.cat([pending, choices[picked[:2]]]))
        torch.testing.assert_close(
            torch.tensor(scores[2], dtype=torch.double),
            acqf(choices[picked[2]].reshape(1, 1, 2))[0],
            rtol=1e-6,
            atol=1e-9,
        )


def test_pending_points_change_the_proposal() -> None:
    planner = sobol_start(seed=1)
    alone = planner.ask(1).proposals[0].parameters
    again = make_planner("uncertainty", SPACE, Y, seed=1)
    again.tell(planner.observations)
    with_pending = again.ask(1, pending=[alone]).proposals[0].parameters
    far = math.hypot(with_pending["a"] - alone["a"], (with_pending["b"] - alone["b"]) / 4)
    assert far > 0.1


def test_same_seed_same_state_same_decision() -> None:
    a, b = sobol_start(seed=5), sobol_start(seed=5)
    da, db = a.ask(3), b.ask(3)
    assert [p.parameters for p in da.proposals] == [p.parameters for p in db.proposals]
    assert da.candidate_scores == db.candidate_scores
    other = sobol_start(seed=6).ask(3)
    assert [p.parameters for p in other.proposals] != [p.parameters for p in da.proposals]


def test_reduces_map_error_more_than_sobol() -> None:
    """After 16 experiments the GP's error over the space is lower than with Sobol points."""
    grid = [{"a": i / 19, "b": -2 + 4 * j / 9} for i in range(20) for j in range(10)]
    gx = SpaceEncoder(SPACE).encode(grid)
    gy = torch.tensor([truth(p) for p in grid], dtype=torch.double)

    def rmse(planner: Planner) -> float:
        for _ in range(5):
            tell(planner, [dict(p.parameters) for p in planner.ask(2).proposals])
        enc = SpaceEncoder(SPACE)
        obs = planner.observations
        assert len(obs) == 16
        model = fit_single_task_gp(
            enc.encode([o.parameters for o in obs]),
            torch.tensor([[o.objectives["y"]] for o in obs], dtype=torch.double),
            bounds=enc.bounds(),
            device="cpu",
        )
        with torch.no_grad():
            mean = model.posterior(gx).mean.reshape(-1)
        return float((mean - gy).pow(2).mean().sqrt())

    active = rmse(sobol_start(seed=2))
    sobol = make_planner("sobol", SPACE, Y, seed=2)
    tell(sobol, [dict(p.parameters) for p in sobol.ask(6).proposals])
    baseline = rmse(sobol)
    print(f"rmse after 16: uncertainty {active:.4f}, sobol {baseline:.4f}")
    assert active < 0.8 * baseline


def test_mixed_space_and_several_objectives() -> None:
    space = SearchSpace(
        parameters=[
            ContinuousParameter(name="t", lower=1.0, upper=100.0, log_scale=True),
            IntegerParameter(name="k", lower=1, upper=4),
            CategoricalParameter(name="s", choices=["w", "e"]),
        ]
    )
    objectives = [
        Objective(name="u", direction="maximize"),
        Objective(name="v", direction="minimize"),
    ]
    planner = UncertaintyPlanner(space, objectives, seed=0, initial_points=6, n_candidates=64)
    for _ in range(2):
        points = [dict(p.parameters) for p in planner.ask(3).proposals]
        planner.tell(
            [
                Observation(
                    parameters=p,
                    objectives={
                        "u": math.log(float(p["t"])) * int(p["k"]),
                        "v": float(p["s"] == "w"),
                    },
                )
                for p in points
            ]
        )
    decision = planner.ask(2)
    assert decision.details["phase"] == "uncertainty"
    assert len(decision.details["posterior_std"][0]) == 2  # one std per objective
    for p in decision.proposals:
        space.validate_point(p.parameters)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"n_candidates": 3}, "planner.options.n_candidates"),
        ({"mc_points": 0}, "planner.options.mc_points"),
        ({"initial_points": -1}, "planner.options.initial_points"),
        ({"acquisition": "entropy"}, "planner.options.acquisition"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, object], key: str) -> None:
    with pytest.raises(InvalidCampaignError, match=key.replace(".", r"\.")):
        make_planner("uncertainty", SPACE, Y, options=options)
