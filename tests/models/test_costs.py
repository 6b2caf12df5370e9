"""Declared costs (models/costs.py): through the action schema, the wire protocol's
describe reply and the campaign file; bad values are refused naming their field."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from instruments.driver import ActionSpec, InstrumentDescription, OutputSpec, ParameterLimit
from models.campaign import _drop_later_defaults
from models.campaign_file import load_campaign
from models.costs import affine_cost
from models.errors import InvalidCampaignError

EXAMPLE = Path(__file__).parents[2] / "examples" / "multifidelity.toml"


def _action(**changes: object) -> ActionSpec:
    data: dict[str, object] = {
        "name": "measure",
        "parameters": [
            ParameterLimit(name="fidelity", minimum=0, maximum=1),
            ParameterLimit(name="mode", type="string", choices=["a", "b"]),
        ],
        "outputs": [OutputSpec(name="y")],
    }
    data.update(changes)
    return ActionSpec.model_validate(data)


def test_affine_cost() -> None:
    assert affine_cost(1.0, {"s": 9.0}, {"s": 0.5, "x": 3}) == pytest.approx(5.5)
    assert affine_cost(2.0, {}, {}) == 2.0
    with pytest.raises(ValueError, match=r"cost_per\.s"):
        affine_cost(1.0, {"s": 9.0}, {"x": 1.0})
    with pytest.raises(ValueError, match=r"cost_per\.s"):
        affine_cost(1.0, {"s": 9.0}, {"s": "high"})


def test_an_action_declares_its_cost_and_it_survives_the_describe_reply() -> None:
    action = _action(cost=2.0, cost_per={"fidelity": 8.0})
    assert action.cost_of({"fidelity": 0.25, "mode": "a"}) == pytest.approx(4.0)
    desc = InstrumentDescription(name="s", driver="d", driver_version="1", actions=[action])
    wire = json.loads(json.dumps(desc.model_dump(mode="json")))
    assert wire["actions"][0]["cost"] == 2.0
    assert wire["actions"][0]["cost_per"] == {"fidelity": 8.0}
    assert InstrumentDescription.model_validate(wire).action("measure") == action


def test_an_old_driver_without_cost_still_describes_itself() -> None:
    wire = {
        "name": "s",
        "driver": "d",
        "driver_version": "1",
        "actions": [{"name": "measure", "parameters": [], "outputs": []}],
    }
    action = InstrumentDescription.model_validate(wire).action("measure")
    assert action.cost == 0.0
    assert action.cost_per == {}
    assert action.cost_of({}) == 0.0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"cost": -1.0}, "cost"),
        ({"cost": float("inf")}, "cost"),
        ({"cost_per": {"fidelity": -2.0}}, "cost_per.fidelity"),
        ({"cost_per": {"nope": 1.0}}, "cost_per.nope"),
        ({"cost_per": {"mode": 1.0}}, "cost_per.mode"),
    ],
)
def test_bad_declared_costs_are_refused_naming_the_field(
    changes: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        _action(**changes)
    text = str(info.value)
    assert field.split(".")[0] in text
    if "." in field:
        assert field.split(".")[1] in text


def test_the_example_declares_costs_and_a_cost_budget() -> None:
    spec = load_campaign(EXAMPLE)
    assert spec.budget.max_cost == 40.0
    sim = spec.instruments[0].simulated
    assert sim is not None
    assert sim.cost == 1.0
    assert sim.cost_per == {"fidelity": 9.0}
    assert spec.planner.name == "mfbo"


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("max_cost = 40.0", "max_cost = -1.0", "budget.max_cost"),
        ("cost = 1.0\n", "cost = -1.0\n", "instruments[0].simulated.cost"),
        (
            'action = "measure"\n',
            'action = "measure"\ncost = -3\n',
            "workflow[0].cost",
        ),
        (
            'action = "measure"\n',
            'action = "measure"\ncost_per = { temperature = 1.0 }\n',
            "workflow[0].cost_per.temperature",
        ),
    ],
)
def test_bad_costs_in_a_campaign_file_name_their_key_path(
    tmp_path: Path, old: str, new: str, path: str
) -> None:
    text = EXAMPLE.read_text()
    assert old in text
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(old, new, 1))
    with pytest.raises(InvalidCampaignError) as info:
        load_campaign(bad)
    assert path in info.value.key_paths()


def test_campaigns_without_costs_keep_their_spec_hash(tmp_path: Path) -> None:
    """A campaign written before costs existed still resumes: the new keys, at their
    defaults, are left out of the hash."""
    hartmann = load_campaign(EXAMPLE.parent / "hartmann6.toml")
    data = hartmann.model_dump(mode="json", exclude={"budget": True, "planner": {"placement"}})
    for step in data["workflow"]:
        assert step.pop("cost") is None
        assert step.pop("cost_per") is None
    for inst in data["instruments"]:
        assert inst["simulated"].pop("cost") == 0.0
        assert inst["simulated"].pop("cost_per") == {}
    _drop_later_defaults(data)
    expected = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    assert hartmann.spec_hash() == expected
