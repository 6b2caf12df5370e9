"""Tests of the descriptors (surrogates/descriptors.py, composition.py, structure.py)."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Composition, Element, Lattice, Structure

from models.errors import InvalidCampaignError, RegistryError
from surrogates.descriptors import descriptor_names, make_descriptor

STRUCTURE_DESCRIPTORS = ["coulomb_matrix", "sine_matrix", "ewald_matrix", "xrd"]
COMPOSITION_DESCRIPTORS = ["fractions", "magpie", "oxidation"]


def permuted(s: Structure) -> Structure:
    """The same crystal with its sites listed in another order."""
    order = np.random.default_rng(0).permutation(len(s))
    return Structure.from_sites([s[int(i)] for i in order])


def translated(s: Structure) -> Structure:
    """The same crystal with every site shifted by one vector (wrapped into the cell)."""
    t = s.copy()
    t.translate_sites(list(range(len(t))), [0.137, 0.291, 0.073], frac_coords=True)
    return t


def test_registry_lists_every_descriptor() -> None:
    assert set(STRUCTURE_DESCRIPTORS + COMPOSITION_DESCRIPTORS) <= set(descriptor_names())
    with pytest.raises(RegistryError, match="unknown descriptor 'nope'"):
        make_descriptor("nope")


@pytest.mark.parametrize("name", STRUCTURE_DESCRIPTORS + COMPOSITION_DESCRIPTORS)
def test_declared_invariances_hold(name: str, perovskite: Structure) -> None:
    desc = make_descriptor(name)
    base = desc.featurize([perovskite])[0]
    assert base.shape == (len(desc.feature_labels()),)
    assert np.all(np.isfinite(base))
    assert np.any(base != 0)
    variants = {
        "site_permutation": permuted(perovskite),
        "translation": translated(perovskite),
        "supercell": perovskite * (2, 1, 1),
    }
    for kind, variant in variants.items():
        other = desc.featurize([variant])[0]
        same = np.allclose(other, base, rtol=1e-6, atol=1e-6)
        if kind in desc.invariances:
            assert same, f"{name} claims {kind} invariance"
        else:
            assert not same, f"{name} does not claim {kind} invariance but has it"


def test_fractions_of_fe2o3() -> None:
    desc = make_descriptor("fractions")
    labels = desc.feature_labels()
    row = desc.featurize(["Fe2O3"])[0]
    assert row[labels.index("Fe")] == pytest.approx(0.4)
    assert row[labels.index("O")] == pytest.approx(0.6)
    assert row.sum() == pytest.approx(1.0)
    assert np.array_equal(row, desc.featurize([Composition("Fe4O6")])[0])
    with pytest.raises(ValueError, match=r"descriptor.options.max_z=20"):
        make_descriptor("fractions", max_z=20).featurize(["Fe2O3"])


def test_magpie_statistics_against_pymatgen_element_data() -> None:
    desc = make_descriptor("magpie")
    labels = desc.feature_labels()
    row = desc.featurize(["Fe2O3"])[0]
    chi_fe, chi_o = Element("Fe").X, Element("O").X
    assert row[labels.index("MagpieData mean Electronegativity")] == pytest.approx(
        0.4 * chi_fe + 0.6 * chi_o, rel=1e-9
    )
    assert row[labels.index("MagpieData range Electronegativity")] == pytest.approx(
        abs(chi_o - chi_fe), abs=1e-3
    )
    fe, o = Element("Fe"), Element("O")
    assert row[labels.index("MagpieData mean MeltingT")] == pytest.approx(
        0.4 * float(fe.melting_point) + 0.6 * float(o.melting_point)
    )
    assert row[labels.index("MagpieData mean Column")] == pytest.approx(
        0.4 * fe.group + 0.6 * o.group
    )
    assert row[labels.index("MagpieData minimum Number")] == 8
    assert row[labels.index("MagpieData maximum Number")] == 26
    assert len(labels) == 149
    assert len(make_descriptor("magpie", full=False).feature_labels()) == 132


def test_oxidation_states_of_fe2o3_and_an_unbalanced_formula() -> None:
    desc = make_descriptor("oxidation")
    labels = desc.feature_labels()
    row = desc.featurize(["Fe2O3"])[0]
    assert row[labels.index("charge balanced")] == 1.0
    assert row[labels.index("minimum oxidation state")] == -2
    assert row[labels.index("maximum oxidation state")] == 3
    unbalanced = desc.featurize(["NaCl2O0.1"])[0]
    assert unbalanced[labels.index("charge balanced")] == 0.0
    assert unbalanced[labels.index("maximum oxidation state")] == 0.0
    metal = desc.featurize(["Na3"])[0]
    assert metal[labels.index("charge balanced")] == 1.0
    assert metal[labels.index("maximum oxidation state")] == 0.0


def test_coulomb_matrix_spectrum_of_a_known_pair() -> None:
    """Two atoms: the spectrum is the eigenvalues of [[a, c], [c, b]] (Rupp et al.)."""
    s = Structure(Lattice.cubic(20.0), ["H", "Li"], [[0, 0, 0], [0.05, 0, 0]])
    row = make_descriptor("coulomb_matrix", size=3).featurize([s])[0]
    d_bohr = 1.0 / 0.529177210903  # 1 angstrom
    a, b, c = 0.5, 0.5 * 3**2.4, 3.0 / d_bohr
    eig = np.linalg.eigvalsh(np.array([[a, c], [c, b]]))
    assert row[0] == pytest.approx(eig[1], rel=1e-4)
    assert row[1] == pytest.approx(eig[0], rel=1e-4)
    assert row[2] == 0.0


def test_xrd_pattern_peaks_where_pymatgen_puts_them(rocksalt: Structure) -> None:
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    desc = make_descriptor("xrd", n_bins=160)
    row = desc.featurize([rocksalt])[0]
    pattern = XRDCalculator().get_pattern(rocksalt, two_theta_range=(10, 90))
    strongest = float(pattern.x[int(np.argmax(pattern.y))])
    assert row.max() == 1.0
    assert abs(10 + 0.5 * (np.argmax(row) + 0.5) - strongest) <= 0.25


def test_structure_descriptors_refuse_compositions() -> None:
    with pytest.raises(ValueError, match="needs structures"):
        make_descriptor("sine_matrix").featurize(["NaCl"])


def test_option_errors_name_the_option() -> None:
    with pytest.raises(InvalidCampaignError, match=r"descriptor\.options\.size"):
        make_descriptor("coulomb_matrix", size=0)
    with pytest.raises(InvalidCampaignError, match=r"descriptor\.options\.bogus: unknown option"):
        make_descriptor("magpie", bogus=1)
    with pytest.raises(InvalidCampaignError, match=r"descriptor\.options\.wavelength"):
        make_descriptor("xrd", wavelength="Xx")
    with pytest.raises(InvalidCampaignError, match="two_theta_max must exceed"):
        make_descriptor("xrd", two_theta_min=50, two_theta_max=40)
    with pytest.raises(ValueError, match="cannot parse formula"):
        make_descriptor("fractions").featurize(["Fe(2"])
