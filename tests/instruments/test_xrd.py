"""Phase identification of powder patterns: known mixtures, noise, absent phases, strain."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from instruments.xrd import identify_phases, mixture_pattern, phase_profile, reference_phase

GRID = np.arange(10.0, 80.0 + 0.02, 0.04)
FWHM = 0.15


def _rocksalt(a: float) -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(a), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def _rutile() -> Structure:
    return Structure.from_spacegroup(
        "P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"], [[0, 0, 0], [0.305, 0.305, 0]]
    )


def _perovskite() -> Structure:
    return Structure.from_spacegroup(
        "Pm-3m", Lattice.cubic(3.905), ["Sr", "Ti", "O"], [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0]]
    )


@pytest.fixture(scope="module")
def refs() -> dict[str, object]:
    return {
        "MgO": reference_phase("MgO", _rocksalt(4.212)),
        "TiO2": reference_phase("TiO2", _rutile()),
        "SrTiO3": reference_phase("SrTiO3", _perovskite()),
    }


def _measure(
    refs: dict,
    fractions: dict[str, float],
    strains: dict[str, float] | None = None,
    counts: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    strains = strains or {}
    y = mixture_pattern(
        [(refs[n], w, strains.get(n, 0.0)) for n, w in fractions.items()], GRID, FWHM
    )
    y = y * (10000.0 / y.max()) + 100.0
    if counts:
        y = np.random.default_rng(seed).poisson(y).astype(float)
    return y


def test_reference_intensities_are_per_unit_mass(refs: dict) -> None:
    # Doubling the cell (same phase, same mass fraction) must not change the pattern.
    single = refs["MgO"]
    double_s = _rocksalt(4.212)
    double_s.make_supercell([2, 1, 1])
    double = reference_phase("MgO", double_s)
    a = phase_profile(single, GRID, FWHM)
    b = phase_profile(double, GRID, FWHM)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9 * a.max())


def test_noise_free_mixture_recovers_fractions(refs: dict) -> None:
    truth = {"MgO": 0.2, "TiO2": 0.5, "SrTiO3": 0.3}
    fit = identify_phases(GRID, _measure(refs, truth), list(refs.values()), fwhm_deg=FWHM)
    for n, w in truth.items():
        assert fit.weight_fractions[n] == pytest.approx(w, abs=0.005)
    assert fit.rwp_percent < 1.0
    assert fit.phases == ["TiO2", "SrTiO3", "MgO"]


def test_noisy_mixture_within_tolerance_and_absent_phase_rejected(refs: dict) -> None:
    truth = {"TiO2": 0.65, "SrTiO3": 0.35}
    errors = []
    for seed in range(3):
        y = _measure(refs, truth, counts=10000.0, seed=seed)
        fit = identify_phases(GRID, y, list(refs.values()), fwhm_deg=FWHM)
        assert fit.weight_fractions["MgO"] == 0.0  # absent: rejected
        errors += [abs(fit.weight_fractions[n] - w) for n, w in truth.items()]
        assert 1.0 < fit.rwp_percent < 20.0
    assert max(errors) < 0.03


def test_strain_is_refined(refs: dict) -> None:
    truth = {"MgO": 0.4, "SrTiO3": 0.6}
    strains = {"MgO": 0.004, "SrTiO3": -0.003}
    y = _measure(refs, truth, strains=strains)
    fit = identify_phases(GRID, y, [refs["MgO"], refs["SrTiO3"]], fwhm_deg=FWHM)
    for n, e in strains.items():
        assert fit.strains[n] == pytest.approx(e, abs=3e-4)
        assert fit.weight_fractions[n] == pytest.approx(truth[n], abs=0.01)
    rigid = identify_phases(GRID, y, [refs["MgO"], refs["SrTiO3"]], fwhm_deg=FWHM, max_strain=0.0)
    assert rigid.rwp_percent > 5 * fit.rwp_percent


def test_bad_input_names_the_field(refs: dict) -> None:
    y = _measure(refs, {"MgO": 1.0})
    with pytest.raises(ValueError, match="measured"):
        identify_phases(GRID, y[:-1], list(refs.values()), fwhm_deg=FWHM)
    with pytest.raises(ValueError, match="references"):
        identify_phases(GRID, y, [refs["MgO"], refs["MgO"]], fwhm_deg=FWHM)
    with pytest.raises(ValueError, match="max_strain"):
        identify_phases(GRID, y, list(refs.values()), fwhm_deg=FWHM, max_strain=0.5)
    with pytest.raises(ValueError, match="fwhm_deg"):
        identify_phases(GRID, y, list(refs.values()), fwhm_deg=0.0)
