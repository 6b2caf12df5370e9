"""Objectives, targets and outcome constraints (models/objectives.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from models.objectives import Objective


def test_directions_targets_and_constraints_have_utilities() -> None:
    assert Objective(name="y", direction="maximize").utility(2.0) == 2.0
    assert Objective(name="y", direction="minimize").utility(2.0) == -2.0
    gap = Objective(name="gap", target=1.4)
    assert gap.direction == "minimize"
    assert gap.utility(1.5) == pytest.approx(-0.1)
    assert gap.utility(1.3) == pytest.approx(-0.1)
    assert gap.better(1.45, 1.2)
    cost = Objective(name="cost", kind="constraint", upper=10.0)
    assert cost.is_constraint
    assert cost.satisfied(9.0)
    assert not cost.satisfied(11.0)
    with pytest.raises(ValueError, match="constraint"):
        cost.utility(1.0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "constraint"}, "lower, upper or both"),
        ({"kind": "constraint", "lower": 2.0, "upper": 1.0}, "exceeds"),
        ({"direction": "maximize", "upper": 1.0}, 'kind = "constraint"'),
        ({"direction": "maximize", "target": 1.0}, "minimis"),
        ({"kind": "constraint", "upper": 1.0, "target": 0.5}, "not constraints"),
    ],
)
def test_inconsistent_entries_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Objective.model_validate({"name": "y", **fields})


def test_an_objective_still_needs_a_direction() -> None:
    with pytest.raises(ValidationError, match="direction"):
        Objective.model_validate({"name": "y"})
