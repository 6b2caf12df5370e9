"""Generative proposers: charge balance, prototype decoration, substitution, duplicates,
and the conditional composition VAE."""

from __future__ import annotations

import numpy as np
from pymatgen.core import Composition

from models.materials import build_structure, parse_material
from planners.proposers import (
    Candidate,
    charge_balanced,
    charge_balanced_compositions,
    decorate,
    deduplicate,
    substitutions,
)
from planners.vae import nearest_formula, train_vae


def test_charge_balance_and_electronegativity_on_known_compounds() -> None:
    assert charge_balanced(Composition("SrTiO3")) == {"Sr": 2, "Ti": 4, "O": -2}
    assert charge_balanced(Composition("Fe3O4")) is None  # one state per element: no 2+/3+ mix
    assert charge_balanced(Composition("SrTiO4")) is None  # Ti would need +6
    assert charge_balanced(Composition("MgCa")) is None  # no anion
    # Sb3S is neutral only as Sb(-2) with S(+6): the anion less electronegative than the
    # cation, so the Pauling test rejects it.
    assert charge_balanced(Composition("Sb3S")) is None
    assert charge_balanced(Composition("Li2O")) == {"Li": 1, "O": -2}


def test_enumeration_of_sr_ti_o() -> None:
    found = {c.reduced_formula for c in charge_balanced_compositions(["Sr", "Ti", "O"])}
    assert {"SrTiO3", "Sr2TiO4", "SrO", "TiO2", "Ti2O3"} <= found
    assert "SrTiO4" not in found
    assert "SrTi" not in found
    ternary = charge_balanced_compositions(["Sr", "Ti", "O"], max_atoms=7, min_elements=3)
    assert all(len(c) == 3 and c.num_atoms <= 7 for c in ternary)
    assert {c.reduced_formula for c in ternary} >= {"SrTiO3", "Sr2TiO4"}


def test_decoration_puts_a_composition_into_matching_prototypes() -> None:
    cands = decorate([Composition("SrTiO3")], "charge_balanced")
    specs = {c.material for c in cands}
    assert "AB3C_cP5_221_a_c_b:Sr,O,Ti" in specs  # the cubic perovskite
    assert "AB3C_cP5_221_a_c_b:Ti,O,Sr" in specs  # and the A/B sites swapped
    for c in cands:
        assert build_structure(c.material).composition.reduced_formula == "SrTiO3"
        assert c.proposer == "charge_balanced"
        assert c.parent.split()[1] in c.material


def test_substitution_records_parent_and_builds_valid_structures() -> None:
    cands = substitutions(["Sr", "Ti", "O"], threshold=1e-3)
    perovskite = next(c for c in cands if c.material == "AB3C_cP5_221_a_c_b:Sr,O,Ti")
    assert perovskite.parent == "CaTiO3 AB3C_cP5_221_a_c_b"
    assert perovskite.formula == "SrTiO3"
    assert perovskite.proposer == "substitution"
    scores = [c.score or 0.0 for c in cands]
    assert scores == sorted(scores, reverse=True)
    assert min(scores) >= 1e-3
    for c in cands:
        s = build_structure(c.material)
        assert s.is_ordered
        assert {e.symbol for e in s.composition.elements} <= {"Sr", "Ti", "O"}
        assert charge_balanced(s.composition) is not None
        assert min(s.distance_matrix[np.triu_indices(len(s), 1)], default=9.0) > 1.0


def _cand(material: str, proposer: str = "p") -> Candidate:
    return Candidate(material, parse_material(material).formula, proposer, "test")


def test_duplicates_and_known_structures_are_removed() -> None:
    rocksalt = "AB_cF8_225_a_b:Cl,Na"
    swapped = "AB_cF8_225_a_b:Na,Cl"  # the same crystal, shifted by half a cell
    zincblende = "AB_cF8_216_c_a:Cl,Na"
    kept = deduplicate([_cand(rocksalt, "a"), _cand(swapped, "b"), _cand(zincblende, "a")])
    assert [c.material for c in kept] == [rocksalt, zincblende]
    assert kept[0].proposer == "a+b"
    copy = build_structure(rocksalt)
    copy.make_supercell([2, 2, 1])
    copy.translate_sites(list(range(len(copy))), [0.13, 0.07, 0.31])
    novel = deduplicate([_cand(rocksalt), _cand(zincblende)], known=[copy])
    assert [c.material for c in novel] == [zincblende]


def test_vae_samples_compositions_that_shift_toward_the_target() -> None:
    rng = np.random.default_rng(0)
    fractions = rng.dirichlet([1.0, 1.0, 1.0], size=80)
    values = fractions[:, 0] * 2.0  # the property grows with the first element's fraction
    vae = train_vae(fractions, values, seed=0, epochs=300)
    high = vae.sample(target=1.8, n=400, seed=1)
    low = vae.sample(target=0.1, n=400, seed=1)
    for s in (high, low):
        assert s.shape == (400, 3)
        assert np.all(s >= 0)
        np.testing.assert_allclose(s.sum(axis=1), 1.0, atol=1e-6)
    assert high[:, 0].mean() > low[:, 0].mean() + 0.3
    again = train_vae(fractions, values, seed=0, epochs=300).sample(1.8, 400, seed=1)
    np.testing.assert_allclose(again, high)


def test_nearest_formula() -> None:
    assert nearest_formula([0.2, 0.2, 0.6], 8) == (1, 1, 3)
    assert nearest_formula([2 / 7, 1 / 7, 4 / 7], 8) == (2, 1, 4)
    assert nearest_formula([1.0, 0.0], 8) == (1, 0)


def test_nearest_formula_prefers_simple_formulas_within_tolerance() -> None:
    # (3, 2, 7) is nearest to these fractions, but SrTiO3-like (1, 1, 3) is within 0.08.
    assert nearest_formula([0.23, 0.17, 0.6], 12) == (1, 1, 3)
    assert nearest_formula([0.23, 0.17, 0.6], 12, tolerance=0.0) == (3, 2, 7)
