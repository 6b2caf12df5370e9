"""Powder X-ray diffraction phase identification: which phases, how much of each, how good.

A-Lab's characterisation station identifies the phases of every synthesis product and their
weight fractions from its powder pattern (Szymanski et al. 2023 used probabilistic deep
learning followed by automated Rietveld refinement). This module does the refinement part
in a simplified, fully deterministic form that any diffractometer driver (real or
simulated) can call:

1. **Reference patterns.** Each candidate phase's peaks come from pymatgen's kinematic
   ``XRDCalculator`` (Cu K-alpha by default, unscaled intensities ``|F|^2 x Lorentz-
   polarisation x multiplicity``). Divided by the cell volume and the cell mass they become
   intensities *per unit mass of the phase*: in a powder mixture the integrated intensity of
   phase ``a`` is proportional to ``w_a I_a / (V_a rho_a)`` (the reference intensity ratio
   method, Chung 1974; the mixture's mass absorption is common to all phases), so once the
   references are normalised this way the fitted scale factors are proportional to weight
   fractions.
2. **Profile.** Peaks are Gaussians of a fixed full width at half maximum on the measured
   two-theta grid. An isotropic lattice strain ``e`` of a phase scales its d-spacings by
   ``1 + e`` (peaks move by Bragg's law, intensities kept).
3. **Fit.** The measured pattern is a non-negative combination of the reference profiles
   plus a background (cubic Bernstein polynomials, non-negative); scale factors come from
   ``scipy.optimize.nnls`` with Poisson weights ``1 / y``. Each phase's strain is refined
   within ``+-max_strain`` by coordinate descent: a grid over the range, then a bounded
   scalar minimisation (``scipy.optimize.minimize_scalar``) around the best grid point.
4. **Identification.** Phases whose weight fraction is below ``min_fraction`` are rejected
   (reported 0) and the rest refitted. The fit quality is the weighted-profile R factor
   ``Rwp = 100 sqrt(sum w (y - y_calc)^2 / sum w y^2)`` (%).

Limits: no peak asymmetry, preferred orientation, micro-absorption, amorphous content or
instrument zero shift; peak widths are known and the same for all phases; candidate phases
must be given (there is no search of a structure database).

References:
    Szymanski, N. J. et al. (2023). An autonomous laboratory for the accelerated synthesis
    of novel materials. Nature 624, 86-91.
    Chung, F. H. (1974). Quantitative interpretation of X-ray diffraction patterns of
    mixtures. I. Matrix-flushing method for quantitative multicomponent analysis. J. Appl.
    Cryst. 7, 519-525.
    Toby, B. H. (2006). R factors in Rietveld analysis: How good is good enough? Powder
    Diffraction 21, 67-70.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar, nnls

logger = logging.getLogger(__name__)

__all__ = [
    "PhaseFit",
    "ReferencePhase",
    "identify_phases",
    "mixture_pattern",
    "phase_profile",
    "reference_phase",
]

INTENSITY_UNIT = 1.0e4
"""Constant factor of the per-mass intensities (keeps typical numbers near 1)."""


@dataclass(frozen=True)
class ReferencePhase:
    """A candidate phase's diffraction peaks, intensities per unit mass.

    Attributes:
        name: The phase's name (usually its reduced formula).
        d_spacing_a: Interplanar spacing of each peak, angstrom.
        intensity_per_mass: Peak intensities per unit mass of the phase (arbitrary but
            common unit, see the module docstring).
        wavelength_a: X-ray wavelength the peaks belong to, angstrom.
    """

    name: str
    d_spacing_a: np.ndarray = field(repr=False)
    intensity_per_mass: np.ndarray = field(repr=False)
    wavelength_a: float = 1.54184


def reference_phase(
    name: str,
    structure: Any,
    *,
    two_theta_max_deg: float = 120.0,
    wavelength: str | float = "CuKa",
) -> ReferencePhase:
    """The reference pattern of a phase from its crystal structure.

    Args:
        name: The phase's name.
        structure: A pymatgen ``Structure``.
        two_theta_max_deg: Largest angle whose peaks are kept, degrees (leave a margin above
            the measured range so strained peaks can move in).
        wavelength: A pymatgen wavelength name (``"CuKa"``) or a wavelength in angstrom.

    Returns:
        The phase's peaks with intensities per unit mass.

    Raises:
        ValueError: If ``two_theta_max_deg`` is not in ``(0, 180)``.
    """
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    if not 0.0 < two_theta_max_deg < 180.0:
        raise ValueError(f"two_theta_max_deg: expected (0, 180), got {two_theta_max_deg!r}")
    calc = XRDCalculator(wavelength=wavelength)
    pattern = calc.get_pattern(structure, scaled=False, two_theta_range=(0.0, two_theta_max_deg))
    cell_mass = float(structure.composition.weight)
    per_mass = np.asarray(pattern.y, dtype=float) / (float(structure.volume) * cell_mass)
    return ReferencePhase(
        name=name,
        d_spacing_a=np.asarray(pattern.d_hkls, dtype=float),
        intensity_per_mass=per_mass * INTENSITY_UNIT,
        wavelength_a=float(calc.wavelength),
    )


def _sigma(fwhm_deg: float) -> float:
    if not fwhm_deg > 0.0:
        raise ValueError(f"fwhm_deg: expected > 0, got {fwhm_deg!r}")
    return fwhm_deg / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def phase_profile(
    phase: ReferencePhase, grid_deg: np.ndarray, fwhm_deg: float, strain: float = 0.0
) -> np.ndarray:
    """A phase's pattern per unit mass on a two-theta grid.

    Args:
        phase: The reference phase.
        grid_deg: Two-theta grid, degrees (length ``m``).
        fwhm_deg: Full width at half maximum of every peak, degrees.
        strain: Isotropic lattice strain (d-spacings times ``1 + strain``).

    Returns:
        Intensities, length ``m``.
    """
    sigma = _sigma(fwhm_deg)
    s = phase.wavelength_a / (2.0 * phase.d_spacing_a * (1.0 + strain))
    ok = s < 1.0
    centre = 2.0 * np.degrees(np.arcsin(s[ok]))
    height = phase.intensity_per_mass[ok]
    near = (centre > grid_deg[0] - 5 * sigma) & (centre < grid_deg[-1] + 5 * sigma)
    centre, height = centre[near], height[near]
    if centre.size == 0:
        return np.zeros_like(grid_deg, dtype=float)
    z = (grid_deg[:, None] - centre[None, :]) / sigma
    return np.asarray(np.exp(-0.5 * z * z) @ height, dtype=float)


def mixture_pattern(
    components: Sequence[tuple[ReferencePhase, float, float]],
    grid_deg: np.ndarray,
    fwhm_deg: float,
) -> np.ndarray:
    """The noise-free pattern of a phase mixture (no background).

    Args:
        components: ``(phase, weight fraction, strain)`` triples.
        grid_deg: Two-theta grid, degrees.
        fwhm_deg: Peak full width at half maximum, degrees.

    Returns:
        Intensities on ``grid_deg`` (per unit mass of the sample).
    """
    y = np.zeros_like(grid_deg, dtype=float)
    for phase, fraction, strain in components:
        if fraction > 0.0:
            y += fraction * phase_profile(phase, grid_deg, fwhm_deg, strain)
    return y


@dataclass(frozen=True)
class PhaseFit:
    """The result of a phase identification.

    Attributes:
        weight_fractions: Every candidate phase's weight fraction (0 for rejected phases;
            the identified ones sum to 1, unless none was found).
        strains: Refined isotropic strain of every identified phase.
        rwp_percent: Weighted-profile R factor of the final fit, %.
        calculated: The fitted pattern (phases plus background) on the grid.
        background: The fitted background on the grid.
    """

    weight_fractions: dict[str, float]
    strains: dict[str, float]
    rwp_percent: float
    calculated: np.ndarray = field(repr=False)
    background: np.ndarray = field(repr=False)

    @property
    def phases(self) -> list[str]:
        """The identified phases, largest weight fraction first."""
        found = [(w, n) for n, w in self.weight_fractions.items() if w > 0.0]
        return [n for _, n in sorted(found, key=lambda t: (-t[0], t[1]))]


def _background_basis(grid_deg: np.ndarray, degree: int) -> np.ndarray:
    """Bernstein polynomials of ``degree`` on the grid (``m x (degree + 1)``, all >= 0)."""
    u = (grid_deg - grid_deg[0]) / (grid_deg[-1] - grid_deg[0])
    return np.stack(
        [math.comb(degree, k) * u**k * (1.0 - u) ** (degree - k) for k in range(degree + 1)],
        axis=1,
    )


class _Fitter:
    """Weighted NNLS of a measured pattern on phase profiles plus a background."""

    def __init__(
        self,
        grid: np.ndarray,
        measured: np.ndarray,
        fwhm_deg: float,
        background_degree: int,
    ) -> None:
        self.grid = grid
        self.y = measured
        self.fwhm_deg = fwhm_deg
        floor = max(1e-3 * float(np.max(np.abs(measured))), 1e-12)
        self.w = 1.0 / np.maximum(measured, floor)
        self.sw = np.sqrt(self.w)
        self.bg = _background_basis(grid, background_degree)
        self.evaluations = 0

    def solve(self, columns: list[np.ndarray]) -> tuple[np.ndarray, float]:
        """Scale factors (phases then background) and the weighted residual sum."""
        self.evaluations += 1
        a = np.column_stack([*columns, self.bg]) if columns else self.bg
        coef, _ = nnls(a * self.sw[:, None], self.y * self.sw, maxiter=50 * a.shape[1])
        r = self.y - a @ coef
        return coef, float(np.sum(self.w * r * r))

    def rwp(self, calculated: np.ndarray) -> float:
        r = self.y - calculated
        denom = float(np.sum(self.w * self.y * self.y))
        return 100.0 * math.sqrt(float(np.sum(self.w * r * r)) / denom) if denom > 0 else 0.0


def _refine_strains(
    fitter: _Fitter,
    phases: list[ReferencePhase],
    strains: list[float],
    max_strain: float,
    grid_points: int,
    sweeps: int,
) -> list[np.ndarray]:
    """Coordinate descent on each phase's strain; returns the final columns."""
    cols = [
        phase_profile(p, fitter.grid, fitter.fwhm_deg, e)
        for p, e in zip(phases, strains, strict=True)
    ]
    if max_strain <= 0.0:
        return cols
    step = 2.0 * max_strain / (grid_points - 1)
    for _ in range(sweeps):
        for i, phase in enumerate(phases):

            def cost(e: float, i: int = i, phase: ReferencePhase = phase) -> float:
                trial = list(cols)
                trial[i] = phase_profile(phase, fitter.grid, fitter.fwhm_deg, e)
                return fitter.solve(trial)[1]

            trials = np.linspace(-max_strain, max_strain, grid_points)
            costs = [cost(float(e)) for e in trials]
            best = float(trials[int(np.argmin(costs))])
            lo, hi = max(-max_strain, best - step), min(max_strain, best + step)
            res = minimize_scalar(cost, bounds=(lo, hi), method="bounded", options={"xatol": 1e-5})
            e = float(res.x) if float(res.fun) < min(costs) else best
            strains[i] = e
            cols[i] = phase_profile(phase, fitter.grid, fitter.fwhm_deg, e)
    return cols


def identify_phases(
    grid_deg: Sequence[float] | np.ndarray,
    measured: Sequence[float] | np.ndarray,
    references: Sequence[ReferencePhase],
    *,
    fwhm_deg: float,
    max_strain: float = 0.01,
    min_fraction: float = 0.02,
    background_degree: int = 3,
    strain_grid_points: int = 21,
    sweeps: int = 2,
) -> PhaseFit:
    """Identify the phases of a powder pattern and their weight fractions.

    Args:
        grid_deg: Two-theta of each point, degrees, increasing (length ``m``).
        measured: Measured intensity of each point (length ``m``), counts or any linear unit.
        references: Candidate phases (names must be unique).
        fwhm_deg: Full width at half maximum of the peaks, degrees.
        max_strain: Largest isotropic strain refined per phase (fraction; 0 fixes none).
        min_fraction: Phases below this weight fraction are rejected and the rest refitted.
        background_degree: Degree of the Bernstein polynomial background.
        strain_grid_points: Grid points of the strain search per phase (odd, >= 3).
        sweeps: Coordinate-descent sweeps over the phases.

    Returns:
        Weight fractions, strains and Rwp (see :class:`PhaseFit`).

    Raises:
        ValueError: If the arrays do not match, the grid is not increasing, a name repeats
            or a setting is out of range (the message names it).
    """
    grid = np.asarray(grid_deg, dtype=float)
    y = np.asarray(measured, dtype=float)
    if grid.ndim != 1 or y.shape != grid.shape or grid.size < 10:
        raise ValueError(f"measured: expected {grid.size} values on the grid, got {y.shape}")
    if not np.all(np.isfinite(y)) or not np.all(np.diff(grid) > 0):
        raise ValueError("grid_deg: expected finite, strictly increasing values")
    names = [r.name for r in references]
    if len(set(names)) != len(names):
        raise ValueError(f"references: repeated phase names in {names}")
    if not 0.0 <= max_strain <= 0.1:
        raise ValueError(f"max_strain: expected [0, 0.1], got {max_strain!r}")
    if not 0.0 <= min_fraction < 1.0:
        raise ValueError(f"min_fraction: expected [0, 1), got {min_fraction!r}")
    if not 0 <= background_degree <= 8:
        raise ValueError(f"background_degree: expected 0 to 8, got {background_degree!r}")
    if strain_grid_points < 3 or sweeps < 1:
        raise ValueError("strain_grid_points: expected >= 3 (and sweeps >= 1)")
    fitter = _Fitter(grid, y, fwhm_deg, background_degree)
    active = list(references)
    strains = [0.0] * len(active)
    while True:
        cols = _refine_strains(fitter, active, strains, max_strain, strain_grid_points, sweeps)
        coef, _ = fitter.solve(cols)
        scales = coef[: len(active)]
        total = float(scales.sum())
        fractions = scales / total if total > 0 else np.zeros_like(scales)
        weak = [i for i, f in enumerate(fractions) if f < min_fraction]
        if not weak or len(weak) == len(active):
            break
        keep = [i for i in range(len(active)) if i not in weak]
        active = [active[i] for i in keep]
        strains = [strains[i] for i in keep]
    a = np.column_stack([*cols, fitter.bg]) if cols else fitter.bg
    calculated = a @ coef
    background = fitter.bg @ coef[len(active) :]
    found: Mapping[str, float] = {
        p.name: float(f) for p, f in zip(active, fractions, strict=True) if f >= min_fraction
    }
    norm = sum(found.values())
    weight_fractions = {n: (found.get(n, 0.0) / norm if norm > 0 else 0.0) for n in names}
    logger.debug("phase id: %s (%d fits)", found, fitter.evaluations)
    return PhaseFit(
        weight_fractions=weight_fractions,
        strains={p.name: e for p, e in zip(active, strains, strict=True) if p.name in found},
        rwp_percent=fitter.rwp(calculated),
        calculated=calculated,
        background=background,
    )
