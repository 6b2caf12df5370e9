"""Shared fixtures for planner tests: small search spaces and objectives."""

from __future__ import annotations

import pytest

from models.objectives import Objective
from models.params import (
    CategoricalParameter,
    ContinuousParameter,
    IntegerParameter,
    SearchSpace,
)


@pytest.fixture
def mixed_space() -> SearchSpace:
    """A space with every parameter kind, log scale and numeric categorical choices included."""
    return SearchSpace(
        parameters=[
            ContinuousParameter(name="temperature_c", lower=20.0, upper=400.0, unit="degC"),
            ContinuousParameter(name="time_s", lower=0.1, upper=1000.0, unit="s", log_scale=True),
            IntegerParameter(name="layers", lower=1, upper=5),
            CategoricalParameter(name="solvent", choices=["water", "ethanol", "dmso"]),
            CategoricalParameter(name="ratio", choices=[1, 2.5]),
        ]
    )


@pytest.fixture
def branin_space() -> SearchSpace:
    """Branin's domain: x1 in [-5, 10], x2 in [0, 15]."""
    return SearchSpace(
        parameters=[
            ContinuousParameter(name="x1", lower=-5.0, upper=10.0),
            ContinuousParameter(name="x2", lower=0.0, upper=15.0),
        ]
    )


@pytest.fixture
def minimize_y() -> list[Objective]:
    """One objective ``y`` to minimise."""
    return [Objective(name="y", direction="minimize")]
