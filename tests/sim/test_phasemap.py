"""Tests of the phase-map world (sim/phasemap.py)."""

from __future__ import annotations

import numpy as np
import pytest

from models.errors import InvalidCampaignError, ParameterLimitError
from sim.phasemap import PHASE_NAMES, PhaseMapWorld
from sim.worlds import get_world, world_names


def test_registered_with_inputs_and_output() -> None:
    assert "phase-map" in world_names()
    world = get_world("phase-map")
    assert isinstance(world, PhaseMapWorld)
    limits = {p.name: (p.minimum, p.maximum) for p in world.parameters()}
    assert limits == {"x_b": (0.0, 1.0), "temperature_c": (300.0, 1100.0)}
    assert [o.name for o in world.outputs()] == ["phase"]


@pytest.mark.parametrize(
    ("x_b", "temperature_c", "phase"),
    [
        (0.05, 320.0, 0),  # A-rich, cold: alpha
        (0.95, 320.0, 1),  # B-rich, cold: beta
        (0.5, 1090.0, 2),  # hot: liquid
        (0.02, 950.0, 0),  # the liquidus rises towards the pure ends
        (0.5, 700.0, 1),  # below the eutectic, right of the solvus (0.395 at t = 0.5)
        (0.24, 476.0, 3),  # the pocket's centre (t = 0.22)
        (0.24, 560.0, 0),  # just above the pocket (t = 0.325)
    ],
)
def test_known_points(x_b: float, temperature_c: float, phase: int) -> None:
    world = get_world("phase-map")
    assert world.evaluate_true({"x_b": x_b, "temperature_c": temperature_c}) == {
        "phase": float(phase)
    }


def test_phase_areas_and_curved_boundaries() -> None:
    world = PhaseMapWorld()
    grid = world.grid(200)
    labels = world.evaluate_array(grid)
    share = np.bincount(labels, minlength=4) / labels.size
    assert len(PHASE_NAMES) == 4
    assert all(0.25 < s < 0.40 for s in share[:3]), share
    assert 0.01 < share[3] < 0.03, share  # a small pocket
    # the alpha/beta boundary moves with temperature (not a straight vertical line)
    u = np.linspace(0, 1, 2001)

    def solvus_at(t_c: float) -> float:
        pts = np.stack([u, np.full_like(u, t_c)], axis=1)
        return float(u[np.argmax(world.evaluate_array(pts) == 1)])

    positions = [solvus_at(t) for t in (310.0, 460.0, 620.0)]
    assert max(positions) - min(positions) > 0.1, positions


def test_array_and_point_evaluation_agree() -> None:
    world = PhaseMapWorld()
    rng = np.random.default_rng(0)
    x = world.bounds[0] + rng.random((50, 2)) * (world.bounds[1] - world.bounds[0])
    labels = world.evaluate_array(x)
    for row, label in zip(x, labels, strict=True):
        point = {"x_b": float(row[0]), "temperature_c": float(row[1])}
        assert world.evaluate_true(point)["phase"] == label


def test_extra_inputs_shift_the_solvus() -> None:
    world = get_world("phase-map", extra_inputs=2)
    assert world.parameter_names == ["x_b", "temperature_c", "z1", "z2"]
    low = world.evaluate_true({"x_b": 0.45, "temperature_c": 320.0, "z1": 0.0, "z2": 0.0})
    high = world.evaluate_true({"x_b": 0.45, "temperature_c": 320.0, "z1": 1.0, "z2": 1.0})
    # the solvus at t = 0.025 sits at 0.541 for mean(z) = 0.5, 0.466 for 0 and 0.616 for 1
    assert (low["phase"], high["phase"]) == (0.0, 0.0)
    assert world.evaluate_true({"x_b": 0.5, "temperature_c": 320.0, "z1": 0.0, "z2": 0.0}) == {
        "phase": 1.0
    }
    assert world.grid(10).shape == (100, 4)


def test_temperature_range_option_rescales() -> None:
    world = get_world("phase-map", temperature_min_c=0.0, temperature_max_c=100.0)
    assert world.evaluate_true({"x_b": 0.5, "temperature_c": 99.0}) == {"phase": 2.0}
    assert world.evaluate_true({"x_b": 0.24, "temperature_c": 22.0}) == {"phase": 3.0}


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"extra_inputs": 9}, "options.extra_inputs"),
        ({"temperature_min_c": 1200.0}, "options.temperature_max_c"),
        ({"temperature_max_c": float("nan")}, "options.temperature_max_c"),
        ({"output": ""}, "options.output"),
        ({"colour": "red"}, "options.colour"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, object], key: str) -> None:
    with pytest.raises(InvalidCampaignError, match=key.replace(".", r"\.")):
        get_world("phase-map", **options)


def test_missing_or_bad_input_is_refused() -> None:
    world = get_world("phase-map")
    with pytest.raises(ParameterLimitError, match="temperature_c"):
        world.evaluate_true({"x_b": 0.5})
    with pytest.raises(ParameterLimitError, match="x_b"):
        world.evaluate_true({"x_b": "half", "temperature_c": 500.0})
    with pytest.raises(ValueError, match="n x 2"):
        PhaseMapWorld().evaluate_array(np.zeros((3, 3)))
