"""Parameters and search spaces (models/params.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from models.errors import ParameterLimitError
from models.params import (
    CategoricalParameter,
    ContinuousParameter,
    IntegerParameter,
    SearchSpace,
)

SPACE = SearchSpace(
    parameters=[
        ContinuousParameter(name="temperature_c", lower=100, upper=900, unit="degC"),
        IntegerParameter(name="cycles", lower=1, upper=5),
        CategoricalParameter(name="atmosphere", choices=["air", "argon"]),
    ]
)


def test_a_valid_point_is_normalised_in_parameter_order() -> None:
    point = SPACE.validate_point({"atmosphere": "argon", "cycles": 3.0, "temperature_c": 450})
    assert point == {"temperature_c": 450.0, "cycles": 3, "atmosphere": "argon"}
    assert list(point) == SPACE.names
    assert isinstance(point["cycles"], int)


@pytest.mark.parametrize(
    ("point", "name", "limit"),
    [
        ({"temperature_c": 901, "cycles": 1, "atmosphere": "air"}, "temperature_c", "bounds"),
        ({"temperature_c": float("nan"), "cycles": 1, "atmosphere": "air"}, "temperature_c", ""),
        ({"temperature_c": 500, "cycles": 2.5, "atmosphere": "air"}, "cycles", "integer"),
        ({"temperature_c": 500, "cycles": 0, "atmosphere": "air"}, "cycles", "bounds"),
        ({"temperature_c": 500, "cycles": 1, "atmosphere": "vacuum"}, "atmosphere", "choices"),
        ({"temperature_c": 500, "cycles": 1}, "atmosphere", "missing"),
        ({"temperature_c": 500, "cycles": 1, "atmosphere": "air", "x": 1}, "x", "unknown"),
        ({"temperature_c": True, "cycles": 1, "atmosphere": "air"}, "temperature_c", "number"),
    ],
)
def test_a_bad_point_names_its_parameter(point: dict[str, object], name: str, limit: str) -> None:
    with pytest.raises(ParameterLimitError) as info:
        SPACE.validate_point(point)
    assert info.value.parameter == name
    assert limit in info.value.limit


def test_bad_parameter_declarations_are_refused() -> None:
    with pytest.raises(ValidationError, match="greater than lower"):
        ContinuousParameter(name="t", lower=1, upper=1)
    with pytest.raises(ValidationError, match="log_scale"):
        ContinuousParameter(name="t", lower=0, upper=1, log_scale=True)
    with pytest.raises(ValidationError, match="distinct"):
        CategoricalParameter(name="c", choices=["a", "a"])
    with pytest.raises(ValidationError, match="used twice"):
        SearchSpace(parameters=[IntegerParameter(name="n", lower=0, upper=2)] * 2)
