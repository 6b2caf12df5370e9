"""Tests of the surrogate benchmark's data files (benchmarks/surrogate_data.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure

from benchmarks.surrogate_data import Dataset, load, save
from benchmarks.surrogate_models import folds_of
from surrogates.graph import crystal_graph


def test_featurised_set_round_trips(tmp_path: Path) -> None:
    cells = [
        Structure(Lattice.cubic(a), ["Sr", "O"], np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]))
        for a in (3.9, 4.1, 4.3)
    ]
    graphs = [crystal_graph(s, 6.0, 8) for s in cells]
    data = Dataset(
        "chgnet-srtio",
        "test",
        np.array([-5.0, -5.2, -5.1]),
        {"magpie": np.arange(6.0).reshape(3, 2), "fractions": np.eye(3)},
        np.array([0, 0, 1]),
        graphs,
    )
    save(data, tmp_path / "set.npz")
    back = load(tmp_path / "set.npz")
    assert back.name == "chgnet-srtio"
    assert np.array_equal(back.y, data.y)
    assert np.array_equal(
        back.x("magpie+fractions"), np.hstack([data.features["magpie"], np.eye(3)])
    )
    assert back.graphs is not None
    assert len(back.graphs) == 3
    for a, b in zip(back.graphs, graphs, strict=True):
        assert a.neighbourhoods() == b.neighbourhoods()


def test_structure_sets_keep_a_material_in_one_fold() -> None:
    groups = np.repeat(np.arange(10), 4)
    data = Dataset("chgnet-srtio", "test", np.zeros(40), {"magpie": np.zeros((40, 1))}, groups)
    for train, test in folds_of(data, 5, None):
        assert not set(groups[train]) & set(groups[test])
