"""Fixtures of the surrogate tests: small materials data sets."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Composition, Lattice, Structure

ELEMENTS = ["Li", "Na", "K", "Mg", "Ca", "Al", "Fe", "Ni", "Cu", "Zn", "O", "S", "Cl", "F"]


def composition_truth(comp: Composition) -> float:
    """A noise-free property of a composition: smooth in mean electronegativity and radius."""
    frac = comp.fractional_composition
    chi = sum(frac[e] * e.X for e in frac.elements)
    radius = sum(frac[e] * e.atomic_radius for e in frac.elements)
    return float(np.sin(2.0 * chi) + 3.0 * (radius - 1.3) ** 2)


@pytest.fixture(scope="session")
def composition_data() -> tuple[list[Composition], np.ndarray]:
    """120 random binary and ternary compositions and their noise-free property."""
    rng = np.random.default_rng(0)
    comps = []
    for _ in range(120):
        k = int(rng.integers(2, 4))
        els = rng.choice(ELEMENTS, k, replace=False)
        amounts = rng.integers(1, 5, k)
        comps.append(Composition(dict(zip(els.tolist(), amounts.tolist(), strict=True))))
    return comps, np.array([composition_truth(c) for c in comps])


@pytest.fixture
def rocksalt() -> Structure:
    """Conventional NaCl cell (8 sites)."""
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


@pytest.fixture
def perovskite() -> Structure:
    """Cubic SrTiO3 (5 sites), slightly distorted so no two sites are equivalent by accident."""
    s = Structure(
        Lattice.cubic(3.905),
        ["Sr", "Ti", "O", "O", "O"],
        [[0, 0, 0], [0.5, 0.52, 0.5], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.03, 0.5, 0.5]],
    )
    return s
