"""Tests of surrogates/metrics.py on cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from surrogates.metrics import (
    calibration_curve,
    gaussian_nll,
    mae,
    miscalibration_area,
    r2,
    regression_report,
)


def test_mae_and_r2_known_values() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert mae(y, y + np.array([1.0, -1.0, 0.5, -0.5])) == pytest.approx(0.75)
    assert r2(y, y) == pytest.approx(1.0)
    assert r2(y, np.full(4, y.mean())) == pytest.approx(0.0)
    # SS_res = 4 * 0.25 = 1, SS_tot = 5
    assert r2(y, y + 0.5) == pytest.approx(1 - 1 / 5)


def test_gaussian_nll_matches_scipy() -> None:
    y, m, s = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 0.0]), np.array([1.0, 0.5, 2.0])
    expected = -np.mean(norm.logpdf(y, m, s))
    assert gaussian_nll(y, m, s) == pytest.approx(expected)
    assert gaussian_nll([0.0], [0.0], [1.0]) == pytest.approx(0.5 * math.log(2 * math.pi))


def test_calibrated_gaussian_errors_have_small_miscalibration() -> None:
    rng = np.random.default_rng(0)
    n = 20000
    std = rng.uniform(0.5, 2.0, n)
    y = rng.normal(0.0, std)
    assert miscalibration_area(y, np.zeros(n), std) < 0.01
    expected, observed = calibration_curve(y, np.zeros(n), std)
    assert expected[0] == 0.0
    assert observed[-1] == 1.0
    assert np.all(np.diff(observed) >= 0)


def test_overconfident_and_underconfident_are_penalised() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(0.0, 1.0, 20000)
    zeros = np.zeros_like(y)
    # std 100x too small: almost no target inside any interval -> area near 0.5
    assert miscalibration_area(y, zeros, np.full_like(y, 0.01)) > 0.45
    # std 100x too large: every target inside every interval -> area near 0.5
    assert miscalibration_area(y, zeros, np.full_like(y, 100.0)) > 0.45
    # analytic: with std = 2 sigma, observed(p) = 2 Phi(2 z_p) - 1
    p = np.linspace(0, 1, 100)
    obs = 2 * norm.cdf(2 * norm.ppf(0.5 + p / 2)) - 1
    analytic = np.trapezoid(np.abs(obs - p), p)
    assert miscalibration_area(y, zeros, np.full_like(y, 0.5)) == pytest.approx(analytic, abs=0.01)


def test_report_and_bad_input() -> None:
    rep = regression_report([1.0, 2.0, 3.0], [1.0, 2.0, 3.5], [0.1, 0.1, 0.1])
    assert set(rep) == {"mae", "r2", "nll", "miscalibration_area"}
    with pytest.raises(ValueError, match="std must be positive"):
        gaussian_nll([1.0], [1.0], [0.0])
    with pytest.raises(ValueError, match="mean has 2 values"):
        mae([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="constant targets"):
        r2([1.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        mae([1.0, float("nan")], [1.0, 2.0])
