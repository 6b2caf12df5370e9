"""Tests of the search-space encodings (planners/encoding.py)."""

from __future__ import annotations

import math

import pytest
import torch

from models.errors import ParameterLimitError
from models.objectives import Objective
from models.params import SearchSpace
from models.records import Observation
from planners.encoding import SpaceEncoder, training_data


def _points() -> list[dict[str, float | int | str]]:
    return [
        {"temperature_c": 20.0, "time_s": 0.1, "layers": 1, "solvent": "water", "ratio": 1},
        {"temperature_c": 400.0, "time_s": 1000.0, "layers": 5, "solvent": "dmso", "ratio": 2.5},
        {"temperature_c": 123.4, "time_s": 10.0, "layers": 3, "solvent": "ethanol", "ratio": 1},
    ]


def test_columns_and_bounds(mixed_space: SearchSpace) -> None:
    enc = SpaceEncoder(mixed_space)
    assert enc.columns == [
        "temperature_c",
        "time_s",
        "layers",
        "solvent=water",
        "solvent=ethanol",
        "solvent=dmso",
        "ratio=1",
        "ratio=2.5",
    ]
    assert enc.dim == 8
    assert enc.n_params == 5
    assert torch.equal(enc.bounds(), torch.stack([torch.zeros(8), torch.ones(8)]).double())


def test_round_trip_mixed_space(mixed_space: SearchSpace) -> None:
    enc = SpaceEncoder(mixed_space)
    x = enc.encode(_points())
    assert x.shape == (3, 8)
    assert x.dtype == torch.double
    assert float(x.min()) >= 0.0
    assert float(x.max()) <= 1.0
    # log scale: 10 s is the geometric middle of [0.1, 1000]
    assert x[2, 1].item() == pytest.approx(0.5)
    # integers own equal slices: 3 of 1..5 is the middle
    assert x[2, 2].item() == pytest.approx(0.5)
    assert x[2, 3:6].tolist() == [0.0, 1.0, 0.0]
    decoded = enc.decode(x)
    for got, want in zip(decoded, _points(), strict=True):
        assert got.keys() == want.keys()
        for k, v in want.items():
            if isinstance(v, float):
                assert got[k] == pytest.approx(v, rel=1e-12)
            else:
                assert got[k] == v
                assert type(got[k]) is type(v)


def test_decode_rounds_clamps_and_is_always_valid(mixed_space: SearchSpace) -> None:
    enc = SpaceEncoder(mixed_space)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(200, enc.dim, generator=gen, dtype=torch.double) * 1.6 - 0.3
    x[0, :] = float("nan")
    points = enc.decode(x)
    for point in points:
        assert mixed_space.validate_point(point) == point
        assert isinstance(point["layers"], int)
    assert {p["layers"] for p in points} == {1, 2, 3, 4, 5}
    assert {p["solvent"] for p in points} == {"water", "ethanol", "dmso"}
    # out-of-range values clamp to the bounds exactly, log scale included
    hi = enc.decode(torch.full((1, enc.dim), 2.0, dtype=torch.double))[0]
    assert hi["temperature_c"] == 400.0
    assert hi["time_s"] == 1000.0
    assert hi["layers"] == 5


def test_integer_slices_are_equal(mixed_space: SearchSpace) -> None:
    enc = SpaceEncoder(mixed_space)
    u = torch.linspace(0.0, 1.0, 1001, dtype=torch.double)
    grid = torch.full((1001, enc.n_params), 0.5, dtype=torch.double)
    grid[:, 2] = u
    layers = [p["layers"] for p in enc.from_unit(grid)]
    counts = [layers.count(k) for k in range(1, 6)]
    assert all(abs(c - 200) <= 1 for c in counts), counts


def test_from_unit_covers_choices_and_stays_valid(mixed_space: SearchSpace) -> None:
    enc = SpaceEncoder(mixed_space)
    grid = torch.tensor([[0.0] * 5, [1.0] * 5, [0.5] * 5], dtype=torch.double)
    lo, hi, mid = enc.from_unit(grid)
    assert lo == {"temperature_c": 20.0, "time_s": 0.1, "layers": 1, "solvent": "water", "ratio": 1}
    assert hi == {
        "temperature_c": 400.0,
        "time_s": 1000.0,
        "layers": 5,
        "solvent": "dmso",
        "ratio": 2.5,
    }
    assert mid["time_s"] == pytest.approx(10.0)
    assert mid["solvent"] == "ethanol"


def test_encode_rejects_invalid_points(mixed_space: SearchSpace) -> None:
    enc = SpaceEncoder(mixed_space)
    bad = dict(_points()[0], solvent="acetone")
    with pytest.raises(ParameterLimitError):
        enc.encode([bad])
    with pytest.raises(ValueError, match="n x 8"):
        enc.decode(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="n x 5"):
        enc.from_unit(torch.zeros(2, 8))


def test_encode_empty(mixed_space: SearchSpace) -> None:
    assert SpaceEncoder(mixed_space).encode([]).shape == (0, 8)


def test_training_data_signs_and_exclusions(branin_space: SearchSpace) -> None:
    enc = SpaceEncoder(branin_space)
    objectives = [
        Objective(name="yield", direction="maximize"),
        Objective(name="cost", direction="minimize"),
    ]
    obs = [
        Observation(parameters={"x1": -5.0, "x2": 0.0}, objectives={"yield": 0.5, "cost": 2.0}),
        Observation(parameters={"x1": 10.0, "x2": 15.0}, objectives={}, feasible=False),
        Observation(parameters={"x1": 0.0, "x2": 7.5}, objectives={"yield": 0.9}),
        Observation(parameters={"x1": 0.0, "x2": 7.5}, objectives={"yield": math.nan, "cost": 1}),
        Observation(parameters={"x1": 2.5, "x2": 15.0}, objectives={"yield": 0.1, "cost": 4.0}),
    ]
    data = training_data(enc, obs, objectives)
    assert data.n == 2
    assert data.n_infeasible == 1
    assert data.n_incomplete == 2
    assert data.X.tolist() == [[0.0, 0.0], [0.5, 1.0]]
    assert data.Y.tolist() == [[0.5, -2.0], [0.1, -4.0]]
    empty = training_data(enc, obs[1:2], objectives)
    assert empty.X.shape == (0, 2)
    assert empty.Y.shape == (0, 2)
