"""Accuracy and calibration metrics of probabilistic regression.

Besides MAE and the coefficient of determination, two measures judge the predicted
uncertainty: the mean Gaussian negative log-likelihood of the targets under
``N(mean, std^2)``, and the *miscalibration area* of Tran et al., "Methods for comparing
uncertainty quantifications for material property predictions", Mach. Learn.: Sci. Technol.
1, 025006 (2020), as the uncertainty-toolbox computes it (Chung et al., 2021): for each
expected proportion ``p`` on a grid of 100 points in ``[0, 1]`` the observed proportion is
the fraction of targets inside the centred ``p`` prediction interval; the area is the
integral of ``|observed - expected|`` over ``p`` (trapezoid rule on the grid): 0 for a
perfectly calibrated model, approaching 0.5 for vanishing or infinite uncertainty.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm

__all__ = [
    "calibration_curve",
    "gaussian_nll",
    "mae",
    "miscalibration_area",
    "r2",
    "regression_report",
]


def _arrays(*values: ArrayLike) -> list[NDArray[np.float64]]:
    out = [np.asarray(v, dtype=np.float64).reshape(-1) for v in values]
    n = out[0].shape[0]
    if n == 0:
        raise ValueError("metrics need at least one target")
    for name, arr in zip(("y_true", "mean", "std"), out, strict=False):
        if arr.shape[0] != n:
            raise ValueError(f"{name} has {arr.shape[0]} values, y_true has {n}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")
    return out


def mae(y_true: ArrayLike, mean: ArrayLike) -> float:
    """Mean absolute error, in the targets' unit."""
    y, m = _arrays(y_true, mean)
    return float(np.mean(np.abs(y - m)))


def r2(y_true: ArrayLike, mean: ArrayLike) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` (1 is perfect, 0 the mean).

    Raises:
        ValueError: If the targets are all equal (``SS_tot = 0``).
    """
    y, m = _arrays(y_true, mean)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0.0:
        raise ValueError("R^2 is undefined for constant targets")
    return 1.0 - float(np.sum((y - m) ** 2)) / ss_tot


def gaussian_nll(y_true: ArrayLike, mean: ArrayLike, std: ArrayLike) -> float:
    """Mean negative log-likelihood of the targets under ``N(mean, std^2)`` (nats).

    Raises:
        ValueError: If any standard deviation is not positive.
    """
    y, m, s = _arrays(y_true, mean, std)
    if np.any(s <= 0):
        raise ValueError("std must be positive for a Gaussian likelihood")
    z = (y - m) / s
    return float(np.mean(0.5 * z**2 + np.log(s) + 0.5 * math.log(2 * math.pi)))


def calibration_curve(
    y_true: ArrayLike, mean: ArrayLike, std: ArrayLike, n_bins: int = 100
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Expected and observed proportions inside centred Gaussian prediction intervals.

    Args:
        y_true: ``n`` targets.
        mean: ``n`` predicted means.
        std: ``n`` predicted standard deviations (positive).
        n_bins: Number of expected proportions, evenly spaced on ``[0, 1]``.

    Returns:
        ``(expected, observed)``, each of length ``n_bins``.
    """
    y, m, s = _arrays(y_true, mean, std)
    if np.any(s <= 0):
        raise ValueError("std must be positive for a calibration curve")
    expected = np.linspace(0.0, 1.0, n_bins)
    # the centred interval holding proportion p spans the quantiles (1-p)/2 .. (1+p)/2
    half_width = norm.ppf(0.5 + expected / 2.0)  # in standard deviations; inf at p = 1
    z = np.abs(y - m) / s
    observed = np.mean(z[None, :] <= half_width[:, None], axis=1)
    return expected, observed.astype(np.float64)


def miscalibration_area(
    y_true: ArrayLike, mean: ArrayLike, std: ArrayLike, n_bins: int = 100
) -> float:
    """Miscalibration area (Tran et al. 2020; uncertainty-toolbox's ``miscalibration_area``).

    The area between the calibration curve and the diagonal, ``integral |observed(p) - p|
    dp`` by the trapezoid rule: 0 when calibrated, approaching 0.5 for vanishing or
    infinite uncertainty.
    """
    expected, observed = calibration_curve(y_true, mean, std, n_bins)
    return float(np.trapezoid(np.abs(observed - expected), expected))


def regression_report(y_true: ArrayLike, mean: ArrayLike, std: ArrayLike) -> dict[str, float]:
    """``{"mae", "r2", "nll", "miscalibration_area"}`` of one set of predictions."""
    return {
        "mae": mae(y_true, mean),
        "r2": r2(y_true, mean),
        "nll": gaussian_nll(y_true, mean, std),
        "miscalibration_area": miscalibration_area(y_true, mean, std),
    }
