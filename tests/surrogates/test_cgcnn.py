"""Tests of the crystal graph (surrogates/graph.py) and the CGCNN ensemble (cgcnn.py)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.optim import optimize_acqf_discrete
from pymatgen.core import Lattice, Structure

from models.errors import InvalidCampaignError
from surrogates.base import make_surrogate
from surrogates.graph import crystal_graph
from surrogates.metrics import mae

CATIONS = ["Li", "Na", "K", "Rb", "Mg", "Ca", "Sr", "Ba"]
ANIONS = ["F", "Cl", "Br", "I", "O", "S", "Se"]


def rocksalts(n: int, seed: int = 0) -> tuple[list[Structure], np.ndarray]:
    """Primitive rock-salt cells of random elements and lattice constants, and a
    noise-free property: half the lattice constant (the cation-anion distance) plus a
    tenth of the cation's electronegativity."""
    rng = np.random.default_rng(seed)
    structures, y = [], []
    for _ in range(n):
        a, b, lat = rng.choice(CATIONS), rng.choice(ANIONS), rng.uniform(4.0, 6.5)
        s = Structure.from_spacegroup(
            "Fm-3m", Lattice.cubic(lat), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]]
        ).get_primitive_structure()
        structures.append(s)
        y.append(lat / 2 + 0.1 * s[0].specie.X)
    return structures, np.array(y)


def test_rocksalt_graph_has_six_anion_neighbours_per_cation(rocksalt: Structure) -> None:
    g = crystal_graph(rocksalt, cutoff=3.0, max_neighbors=12)
    assert g.n_sites == 8
    for i in range(8):
        mask = g.src == i
        assert mask.sum() == 6
        assert np.allclose(g.distances[mask], 5.64 / 2)
        assert set(g.atomic_numbers[g.dst[mask]]) == {28 - g.atomic_numbers[i]}  # Na<->Cl


def test_ties_at_the_last_neighbour_are_all_kept(rocksalt: Structure) -> None:
    # 6 Cl at a/2, then 12 Na at a/sqrt(2): asking for 8 keeps all 18, not an arbitrary 8
    g = crystal_graph(rocksalt, cutoff=5.0, max_neighbors=8)
    assert Counter(g.src.tolist()) == dict.fromkeys(range(8), 18)


def test_graph_invariances(perovskite: Structure) -> None:
    base = crystal_graph(perovskite, cutoff=6.0)
    order = np.random.default_rng(0).permutation(len(perovskite))
    permuted = Structure.from_sites([perovskite[int(i)] for i in order])
    moved = perovskite.copy()
    moved.translate_sites(list(range(len(moved))), [0.3, 0.1, 0.7])
    assert crystal_graph(permuted, cutoff=6.0).neighbourhoods() == base.neighbourhoods()
    assert crystal_graph(moved, cutoff=6.0).neighbourhoods() == base.neighbourhoods()
    # a supercell repeats every site's neighbourhood
    doubled = crystal_graph(perovskite * (2, 1, 1), cutoff=6.0).neighbourhoods()
    assert doubled == sorted(base.neighbourhoods() * 2)


@pytest.fixture(scope="module")
def fitted_cgcnn() -> tuple[object, list[Structure], np.ndarray, np.ndarray]:
    structures, y = rocksalts(48)
    model = make_surrogate(
        "cgcnn",
        n_members=2,
        epochs=60,
        atom_len=16,
        hidden=32,
        n_conv=2,
        batch_size=12,
        n_gaussians=20,
        cutoff=6.0,
    ).fit(structures[:36], y[:36])
    return model, structures[36:], y[36:], y[:36]


def test_cgcnn_beats_the_mean_predictor(fitted_cgcnn: tuple) -> None:
    model, test, y_test, y_train = fitted_cgcnn
    mean, std = model.predict(test)
    baseline = mae(y_test, np.full(len(y_test), y_train.mean()))
    assert mae(y_test, mean) < 0.5 * baseline
    assert np.all(std > 0)


def test_cgcnn_botorch_model_over_structure_ids(fitted_cgcnn: tuple) -> None:
    model, test, _, _ = fitted_cgcnn
    ids = model.featurize(test)  # files the candidates, returns their id column
    assert ids.shape == (len(test), 1)
    mean, std = model.predict(ids)
    bm = model.as_botorch_model()
    x = torch.as_tensor(ids, dtype=torch.double)
    post = bm.posterior(x)
    assert np.allclose(post.mean.detach().reshape(-1).numpy(), mean, rtol=1e-5)
    assert np.allclose(post.variance.detach().reshape(-1).sqrt().numpy(), std, rtol=1e-4)
    acqf = qLogNoisyExpectedImprovement(bm, X_baseline=x[:4])
    best, value = optimize_acqf_discrete(acqf, q=2, choices=x[4:])
    assert best.shape == (2, 1)
    assert torch.isfinite(value).all()
    with pytest.raises(ValueError, match="structure ids must be integers"):
        model.predict(np.array([[1e6]]))


def test_cgcnn_options_and_input_errors() -> None:
    with pytest.raises(InvalidCampaignError, match=r"surrogate\.options\.cutoff"):
        make_surrogate("cgcnn", cutoff=0)
    with pytest.raises(ValueError, match="structures or an n x 1 column"):
        make_surrogate("cgcnn").fit(np.zeros((4, 3)), np.arange(4.0))


def test_filed_graphs_predict_as_the_structures(fitted_cgcnn: tuple) -> None:
    model, test, _, _ = fitted_cgcnn
    graphs = [crystal_graph(s, 6.0, 12) for s in test]  # the fixture's cutoff and neighbours
    ids = model.file_graphs(graphs)
    assert ids.shape == (len(test), 1)
    from_graphs, _ = model.predict(ids)
    from_structures, _ = model.predict(test)
    assert np.allclose(from_graphs, from_structures, rtol=1e-5)
