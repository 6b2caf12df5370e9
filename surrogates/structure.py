"""Structure descriptors: Coulomb, sine and Ewald-sum matrix spectra, binned simulated XRD.

* ``coulomb_matrix`` — Rupp et al., "Fast and accurate modeling of molecular atomization
  energies with machine learning", PRL 108, 058301 (2012): ``M_ii = Z_i^2.4 / 2``,
  ``M_ij = Z_i Z_j / |r_i - r_j|`` (minimum-image distance, in bohr), by matminer's
  ``CoulombMatrix``.
* ``sine_matrix`` — Faber et al., "Crystal structure representations for machine learning
  models of formation energies", Int. J. Quantum Chem. 115, 1094 (2015): the periodic
  ``1/|B sum_k e_k sin^2(pi (B^-1 (r_i - r_j))_k)|`` form, by matminer's
  ``SineCoulombMatrix``.
* ``ewald_matrix`` — the Ewald-sum matrix of the same paper: the pairwise terms of the
  Ewald energy of point charges ``Z_i`` in a neutralising background, by pymatgen's
  ``EwaldSummation.total_energy_matrix`` (eV).
* ``xrd`` — pymatgen's ``XRDCalculator`` powder pattern (Cu K-alpha by default), its
  intensities summed into even 2-theta bins and scaled to a maximum of one.

The matrices are reduced to a fixed-length vector as their eigenvalues sorted by decreasing
magnitude, zero-padded (or cut) to ``size`` (Rupp et al.'s sorted-spectrum form). matminer
and pymatgen compute the matrices rather than our own code because they are the maintained
references; DScribe would also do, but needs ``ase < 3.27`` while the shared environment
holds a newer ase for CHGNet. The neighbour graph of crystal-graph networks is in
:mod:`surrogates.graph` (it is not a fixed-length row).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator
from pymatgen.core import Structure

from models.errors import InvalidCampaignError
from surrogates.descriptors import Descriptor, DescriptorOptions, Material, register_descriptor

logger = logging.getLogger(__name__)

__all__ = ["CoulombMatrixSpectrum", "EwaldMatrixSpectrum", "SineMatrixSpectrum", "XRDPattern"]


def sorted_spectrum(matrix: NDArray[np.float64], size: int) -> NDArray[np.float64]:
    """Eigenvalues of a symmetric matrix by decreasing magnitude, zero-padded to ``size``."""
    eig = np.linalg.eigvalsh(0.5 * (matrix + matrix.T))
    eig = eig[np.argsort(-np.abs(eig), kind="stable")]
    out = np.zeros(size, dtype=np.float64)
    out[: min(size, eig.shape[0])] = eig[:size]
    return out


class _SpectrumOptions(DescriptorOptions):
    size: int = Field(40, ge=1, le=10_000)


class _MatrixSpectrum(Descriptor):
    needs_structure: ClassVar[bool] = True
    invariances: ClassVar[tuple[str, ...]] = ("site_permutation", "translation")
    Options: ClassVar[type[DescriptorOptions]] = _SpectrumOptions
    options: _SpectrumOptions

    def feature_labels(self) -> list[str]:
        """``"<name> eig 0"`` ... (largest magnitude first)."""
        return [f"{self.name} eig {i}" for i in range(self.options.size)]

    def featurize_one(self, material: Material) -> NDArray[np.float64]:
        """The sorted, padded spectrum of one structure's matrix."""
        assert isinstance(material, Structure)
        return sorted_spectrum(self.matrix(material), self.options.size)

    def matrix(self, structure: Structure) -> NDArray[np.float64]:
        """The ``n_sites x n_sites`` matrix of one structure."""
        raise NotImplementedError


@register_descriptor("coulomb_matrix")
class CoulombMatrixSpectrum(_MatrixSpectrum):
    """Sorted eigenvalues of the Coulomb matrix (Rupp et al. 2012), via matminer.

    Invariant to site permutation, translation and rotation (minimum-image distances);
    not to supercells (a supercell has more sites and other eigenvalues).

    Options:
        size: Number of eigenvalues kept (structures with more sites are cut).
    """

    def matrix(self, structure: Structure) -> NDArray[np.float64]:
        """The Coulomb matrix (diagonal ``Z^2.4 / 2``)."""
        from matminer.featurizers.structure import CoulombMatrix

        return np.asarray(CoulombMatrix(flatten=False).featurize(structure)[0], dtype=np.float64)


@register_descriptor("sine_matrix")
class SineMatrixSpectrum(_MatrixSpectrum):
    """Sorted eigenvalues of the sine Coulomb matrix (Faber et al. 2015), via matminer.

    Invariant to site permutation and translation (it is periodic in fractional
    coordinates); not to supercells.

    Options:
        size: Number of eigenvalues kept.
    """

    def matrix(self, structure: Structure) -> NDArray[np.float64]:
        """The sine matrix (diagonal ``Z^2.4 / 2``)."""
        from matminer.featurizers.structure import SineCoulombMatrix

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = SineCoulombMatrix(flatten=False).featurize(structure)[0]
        return np.asarray(out, dtype=np.float64)


class _EwaldOptions(_SpectrumOptions):
    accuracy: float = Field(4.0, gt=0, le=12)


@register_descriptor("ewald_matrix")
class EwaldMatrixSpectrum(_MatrixSpectrum):
    """Sorted eigenvalues of the Ewald-sum matrix (Faber et al. 2015), via pymatgen.

    Charges are the atomic numbers (Faber et al.'s choice, so no oxidation states are
    needed); the matrix is pymatgen's pairwise Ewald energy in eV. Invariant to site
    permutation and translation; not to supercells.

    Options:
        size: Number of eigenvalues kept.
        accuracy: pymatgen's ``acc_factor`` (digits of accuracy of the sums).
    """

    Options: ClassVar[type[DescriptorOptions]] = _EwaldOptions
    options: _EwaldOptions

    def matrix(self, structure: Structure) -> NDArray[np.float64]:
        """The Ewald-sum matrix (eV), charges ``Z_i``."""
        from pymatgen.analysis.ewald import EwaldSummation

        charged = structure.copy()
        charged.add_oxidation_state_by_site([float(site.specie.Z) for site in structure])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the cell is charged: a background neutralises it
            ewald = EwaldSummation(charged, acc_factor=self.options.accuracy)
            return np.asarray(ewald.total_energy_matrix, dtype=np.float64)


class _XRDOptions(DescriptorOptions):
    wavelength: str = "CuKa"
    two_theta_min: float = Field(10.0, ge=0, lt=180)
    two_theta_max: float = Field(90.0, gt=0, le=180)
    n_bins: int = Field(80, ge=1, le=100_000)
    symprec: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _range(self) -> _XRDOptions:
        if self.two_theta_max <= self.two_theta_min:
            raise ValueError("two_theta_max must exceed two_theta_min")
        return self


@register_descriptor("xrd")
class XRDPattern(Descriptor):
    """Binned simulated powder XRD pattern (pymatgen ``XRDCalculator``), maximum one.

    Invariant to site permutation, translation, rotation and supercells (the same crystal
    diffracts the same way; the pattern is scaled to its strongest peak).

    Options:
        wavelength: An ``XRDCalculator`` wavelength key (``"CuKa"``, ``"MoKa"``, ...).
        two_theta_min: Start of the 2-theta range (degrees).
        two_theta_max: End of the 2-theta range (degrees).
        n_bins: Number of even bins the range is cut into.
        symprec: Symmetry precision for refining the cell first (0: none).
    """

    needs_structure: ClassVar[bool] = True
    invariances: ClassVar[tuple[str, ...]] = ("site_permutation", "translation", "supercell")
    Options: ClassVar[type[DescriptorOptions]] = _XRDOptions
    options: _XRDOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        from pymatgen.analysis.diffraction.xrd import WAVELENGTHS, XRDCalculator

        if self.options.wavelength not in WAVELENGTHS:
            raise InvalidCampaignError(
                None,
                [
                    (
                        "descriptor.options.wavelength",
                        f"unknown {self.options.wavelength!r}; one of {sorted(WAVELENGTHS)}",
                    )
                ],
            )
        self._calc = XRDCalculator(wavelength=self.options.wavelength, symprec=self.options.symprec)
        self._edges = np.linspace(
            self.options.two_theta_min, self.options.two_theta_max, self.options.n_bins + 1
        )

    def feature_labels(self) -> list[str]:
        """``"xrd 2theta a-b"`` for each bin (degrees)."""
        e = self._edges
        return [f"xrd 2theta {e[i]:.2f}-{e[i + 1]:.2f}" for i in range(self.options.n_bins)]

    def featurize_one(self, material: Material) -> NDArray[np.float64]:
        """The binned pattern of one structure (zeros if no peak falls in the range)."""
        assert isinstance(material, Structure)
        pattern = self._calc.get_pattern(
            material,
            scaled=False,
            two_theta_range=(self.options.two_theta_min, self.options.two_theta_max),
        )
        hist, _ = np.histogram(
            np.asarray(pattern.x), bins=self._edges, weights=np.asarray(pattern.y)
        )
        peak = hist.max(initial=0.0)
        return hist / peak if peak > 0 else hist.astype(np.float64)
