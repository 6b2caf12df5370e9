"""Tests of the phase-pockets world and the macro-averaged accuracy (sim/pockets.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.errors import InvalidCampaignError
from sim.pockets import Pocket, PocketWorld, macro_accuracy
from sim.worlds import get_world, world_names


def test_registered_and_deterministic_per_layout_seed() -> None:
    assert "phase-pockets" in world_names()
    a = get_world("phase-pockets", layout_seed=3)
    b = get_world("phase-pockets", layout_seed=3)
    c = get_world("phase-pockets", layout_seed=4)
    grid = a.grid(60)
    assert isinstance(a, PocketWorld)
    assert np.array_equal(a.evaluate_array(grid), b.evaluate_array(grid))
    assert not np.array_equal(a.evaluate_array(grid), c.evaluate_array(grid))
    assert a.evaluate_true({"x_b": 0.5, "temperature_c": 700.0})["phase"] in range(a.n_phases)


@pytest.mark.parametrize("seed", range(8))
def test_every_pocket_is_small_and_inside_one_large_phase(seed: int) -> None:
    world = PocketWorld(layout_seed=seed, n_pockets=3)
    assert world.n_phases == 6
    grid = world.grid(200)
    labels = world.evaluate_array(grid)
    fractions = np.bincount(labels, minlength=6) / labels.size
    for k, pocket in enumerate(world.pockets):
        # the pocket's grid area matches the ellipse, between the smallest and largest
        assert fractions[3 + k] == pytest.approx(pocket.area, abs=2e-3)
        assert math.pi * 0.05**2 - 2e-3 <= fractions[3 + k] <= math.pi * 0.08**2 + 2e-3
        # the ring around it (margin 0.03) is one large phase, the same all round
        ring = pocket.rim(0.03)
        t = world.t_min + ring[:, 1] * (world.t_max - world.t_min)
        around = world.evaluate_array(np.stack([ring[:, 0], t], axis=1))
        assert len(set(around.tolist())) == 1
        assert int(around[0]) in (0, 1, 2)
    assert fractions[:3].min() > 0.15  # the three large phases are large
    for i, a in enumerate(world.pockets):  # pockets keep the margin from each other
        for b in world.pockets[i + 1 :]:
            ring = a.rim(0.03 - 1e-9)
            assert not b.contains(ring[:, 0], ring[:, 1]).any()


def test_pocket_geometry() -> None:
    pocket = Pocket((0.5, 0.5), (0.1, 0.05), math.pi / 2)  # long axis along t
    inside = pocket.contains(np.array([0.5, 0.5, 0.5, 0.56]), np.array([0.5, 0.59, 0.62, 0.5]))
    assert inside.tolist() == [True, True, False, False]
    assert pocket.area == pytest.approx(math.pi * 0.005)
    rim = pocket.rim(0.0)
    assert rim.shape == (64, 2)
    assert np.allclose(((rim[:, 0] - 0.5) / 0.05) ** 2 + ((rim[:, 1] - 0.5) / 0.1) ** 2, 1.0)


def test_macro_accuracy_weighs_every_phase_equally() -> None:
    truth = np.array([0] * 96 + [1] * 4)
    assert macro_accuracy(truth, truth) == 1.0
    missed = np.zeros(100, dtype=int)  # the rare phase never predicted
    assert float((missed == truth).mean()) == 0.96
    assert macro_accuracy(missed, truth) == 0.5
    half = truth.copy()
    half[-2:] = 0
    assert macro_accuracy(half, truth) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="equal-length"):
        macro_accuracy(truth[:3], truth)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"n_pockets": 0}, "n_pockets"),
        ({"layout_seed": -1}, "layout_seed"),
        ({"pocket_min": 0.0}, "pocket_min"),
        ({"pocket_min": 0.09, "pocket_max": 0.08}, "pocket_max"),
        ({"margin": 0.5}, "margin"),
        ({"n_pockets": 8, "pocket_min": 0.2, "pocket_max": 0.2}, "n_pockets"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, object], key: str) -> None:
    with pytest.raises(InvalidCampaignError, match=rf"options\.{key}"):
        PocketWorld(**options)  # type: ignore[arg-type]
