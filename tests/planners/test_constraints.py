"""Linear and mixture constraints in the planners (planners/constraints.py and users)."""

from __future__ import annotations

import pytest

from models.constraints import LinearConstraint, MixtureConstraint
from models.objectives import Objective
from models.params import CategoricalParameter, ContinuousParameter, SearchSpace
from models.records import Observation
from planners.base import make_planner
from planners.constraints import linear_constraints
from planners.encoding import SpaceEncoder

SPACE = SearchSpace(
    parameters=[
        CategoricalParameter(name="route", choices=["sol-gel", "solid-state"]),
        ContinuousParameter(name="a", lower=0.05, upper=0.9),
        ContinuousParameter(name="b", lower=0.05, upper=0.9),
        ContinuousParameter(name="c", lower=0.05, upper=0.9),
        ContinuousParameter(name="t", lower=100.0, upper=200.0),
    ],
    constraints=[
        MixtureConstraint(parameters=["a", "b", "c"]),
        LinearConstraint(coefficients={"a": 1.0, "t": 0.01}, upper=2.2),
    ],
)
Y = [Objective(name="y", direction="maximize")]


def test_constraints_become_botorch_triples_on_the_model_encoding() -> None:
    encoder = SpaceEncoder(SPACE)
    cons = linear_constraints(encoder)
    (eq_idx, eq_coef, eq_rhs) = cons.equality[0]
    # one-hot "route" takes columns 0 and 1, so a, b, c are columns 2, 3, 4
    assert eq_idx.tolist() == [2, 3, 4]
    assert eq_coef.tolist() == pytest.approx([0.85, 0.85, 0.85])
    assert eq_rhs == pytest.approx(1.0 - 3 * 0.05)
    (in_idx, in_coef, in_rhs) = cons.inequality[0]
    assert in_idx.tolist() == [2, 5]
    # -(0.85 u_a + 1.0 u_t) >= -(2.2 - 0.05 - 1.0)
    assert in_coef.tolist() == pytest.approx([-0.85, -1.0])
    assert in_rhs == pytest.approx(-(2.2 - 0.05 - 1.0))
    # the triples agree with the constraints on encoded points
    point = {"route": "sol-gel", "a": 0.3, "b": 0.3, "c": 0.4, "t": 150.0}
    x = encoder.encode([point])[0]
    assert float((x[eq_idx] * eq_coef).sum()) == pytest.approx(eq_rhs)
    unit = linear_constraints(encoder, unit=True)
    assert unit.equality[0][0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("name", ["random", "sobol"])
def test_space_filling_planners_sample_the_constrained_polytope(name: str) -> None:
    planner = make_planner(name, SPACE, Y, seed=3)
    decision = planner.ask(24)
    points = [p.parameters for p in decision.proposals]
    for p in points:
        SPACE.check_constraints(p)
    # the free parameters still vary
    assert len({p["route"] for p in points}) == 2
    assert len({round(float(p["t"]), 6) for p in points}) == 24  # type: ignore[arg-type]


def test_bayesopt_proposals_satisfy_mixture_and_linear_constraints() -> None:
    planner = make_planner(
        "qlognei",
        SPACE,
        Y,
        seed=0,
        options={"initial_points": 6, "num_restarts": 2, "raw_samples": 64, "mc_samples": 64},
    )
    for _ in range(4):
        decision = planner.ask(2)
        planner.tell(
            [
                Observation(
                    dict(p.parameters),
                    {"y": float(p.parameters["a"]) - (float(p.parameters["b"]) - 0.3) ** 2},  # type: ignore[arg-type]
                )
                for p in decision.proposals
            ]
        )
    decision = planner.ask(2)
    assert decision.details["phase"] == "bayesopt"
    assert decision.details["n_constraint_violations"] == 0
    for p in decision.proposals:
        SPACE.check_constraints(p.parameters)
    best = max(planner.observations, key=lambda o: o.objectives["y"])
    assert best.objectives["y"] > 0.5  # a is pushed up within the simplex and t <= 220 - 100a
