"""Parameter constraints (models/constraints.py) and their checks on the search space."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from models.campaign import CampaignSpec
from models.campaign_file import parse_spec, read_toml
from models.constraints import LinearConstraint, MixtureConstraint
from models.errors import InvalidCampaignError, ParameterLimitError, Problem
from models.params import ContinuousParameter, SearchSpace

HARTMANN6 = Path(__file__).parents[2] / "examples" / "hartmann6.toml"

SPACE = SearchSpace(
    parameters=[
        ContinuousParameter(name="a", lower=0.0, upper=1.0),
        ContinuousParameter(name="b", lower=0.0, upper=0.6),
        ContinuousParameter(name="c", lower=0.1, upper=1.0),
        ContinuousParameter(name="t", lower=100.0, upper=200.0),
    ],
    constraints=[
        MixtureConstraint(parameters=["a", "b", "c"]),
        LinearConstraint(coefficients={"a": 1.0, "t": 0.01}, upper=2.5),
    ],
)


def test_a_point_on_the_simplex_passes() -> None:
    point = {"a": 0.2, "b": 0.3, "c": 0.5, "t": 150.0}
    SPACE.check_constraints(point)
    assert SPACE.constraint_violations(point) == []
    # decimal fractions rarely sum to exactly one; the check has a tolerance
    SPACE.check_constraints({"a": 0.1, "b": 0.2, "c": 0.7, "t": 100.0})


def test_violations_name_the_constraint_and_the_sum() -> None:
    point = {"a": 0.9, "b": 0.3, "c": 0.5, "t": 190.0}
    found = SPACE.constraint_violations(point)
    assert found == [
        "a + b + c == 1 (sum is 1.7)",
        "1*a + 0.01*t <= 2.5 (sum is 2.8)",
    ]
    with pytest.raises(ParameterLimitError) as info:
        SPACE.check_constraints(point)
    assert info.value.parameter == "a"
    assert "a + b + c == 1" in info.value.limit


def test_constraints_must_fit_the_parameters() -> None:
    params = list(SPACE.parameters)
    with pytest.raises(ValidationError, match="unknown parameter 'z'"):
        SearchSpace(parameters=params, constraints=[MixtureConstraint(parameters=["a", "z"])])
    with pytest.raises(ValidationError, match="cannot hold"):
        SearchSpace(
            parameters=params, constraints=[MixtureConstraint(parameters=["a", "b"], total=3)]
        )
    logp = ContinuousParameter(name="r", lower=1.0, upper=10.0, log_scale=True)
    with pytest.raises(ValidationError, match="log scale"):
        SearchSpace(
            parameters=[*params, logp],
            constraints=[LinearConstraint(coefficients={"r": 1.0, "a": 1.0}, upper=3)],
        )
    with pytest.raises(ValidationError, match="lower, upper or both"):
        LinearConstraint(coefficients={"a": 1.0})
    with pytest.raises(ValidationError, match="distinct"):
        MixtureConstraint(parameters=["a", "a"])


def test_campaign_file_constraints_reach_the_space_and_errors_name_the_key() -> None:
    data = read_toml(HARTMANN6)
    data["parameter_constraints"] = [
        {"type": "mixture", "parameters": ["x1", "x2", "x3"]},
        {"type": "linear", "coefficients": {"x4": 1.0, "x5": 2.0}, "upper": 1.0},
    ]
    spec = parse_spec(data, CampaignSpec)
    assert len(spec.space.constraints) == 2
    data["parameter_constraints"] = [{"type": "linear", "coefficients": {"x9": 1}, "upper": 1}]
    with pytest.raises(InvalidCampaignError) as info:
        parse_spec(data, CampaignSpec)
    assert info.value.problems == [Problem(("parameter_constraints", 0), "unknown parameter 'x9'")]


def test_new_keys_left_at_their_defaults_keep_the_spec_hash() -> None:
    data = read_toml(HARTMANN6)
    plain = parse_spec(data, CampaignSpec).spec_hash()
    explicit = dict(data)
    explicit["parameter_constraints"] = []
    explicit["objectives"] = [{**o, "kind": "objective"} for o in data["objectives"]]
    assert parse_spec(explicit, CampaignSpec).spec_hash() == plain
    explicit["objectives"] = [{**o, "reference": 1.0} for o in data["objectives"]]
    assert parse_spec(explicit, CampaignSpec).spec_hash() != plain
