"""The problem tables of a campaign on a simulated world (sim/campaign_toml.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.campaign_file import load_campaign
from models.errors import InvalidCampaignError
from sim.campaign_toml import problem_toml
from sim.worlds import get_world

REST = """
[[workflow]]
kind = "station"
action = "measure"

[[instruments]]
name = "station-1"
kind = "station"
[instruments.simulated]
world = "{world}"

[planner]
name = "random"

[budget]
max_experiments = 2
"""


@pytest.mark.parametrize("world", ["branin", "hartmann6", "branin-currin"])
def test_a_campaign_gets_the_worlds_inputs_bounds_and_outputs(tmp_path: Path, world: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[campaign]\nname = "c"\n\n' + problem_toml(world) + REST.format(world=world))
    spec = load_campaign(path)
    truth = get_world(world)
    assert [(p.name, p.lower, p.upper) for p in spec.space.parameters] == [  # type: ignore[union-attr]
        (p.name, p.minimum, p.maximum) for p in truth.parameters()
    ]
    assert [(o.name, o.direction) for o in spec.objectives] == [
        (o.name, "maximize") for o in truth.outputs()
    ]


def test_bounds_narrow_an_input_and_an_unknown_input_is_named() -> None:
    assert "lower = 0.0\nupper = 2.5\n" in problem_toml("branin", bounds={"x1": (0, 2.5)})
    with pytest.raises(InvalidCampaignError) as info:
        problem_toml("branin", bounds={"x9": (0, 1)})
    assert info.value.problems[0].key == "bounds.x9"
