"""How ensembles fit: MLP early stopping and epochs, out-of-bag calibration, flat columns."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from surrogates.base import feature_scaling, make_surrogate
from surrogates.classical import RandomForestSurrogate
from surrogates.mlp import ResidualMLPEnsemble, auto_epochs

TINY = {"n_members": 2, "hidden": [16], "batch_size": 16}


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 3))
    return x, np.sin(4 * x[:, 0]) + x[:, 1] + rng.normal(0.0, 0.3, n)


def test_epochs_grow_with_the_rows() -> None:
    assert auto_epochs(10) == 60
    assert auto_epochs(40) == 180
    assert auto_epochs(1000) == 200
    x, y = _data(12)
    m = make_surrogate("mlp_ensemble", **TINY).fit(x, y)  # too few rows to hold any out
    assert isinstance(m, ResidualMLPEnsemble)
    assert m.stopped_epochs == auto_epochs(12)


def test_early_stopping_on_the_held_out_rows_sets_the_refit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Noisy targets and many epochs: the held-out error stops improving long before the
    last epoch, and the refit on all rows runs the epochs the calibration fit chose."""
    x, y = _data(80)
    runs: list[tuple[int, int | None]] = []
    train = ResidualMLPEnsemble._train_on

    def spy(self: ResidualMLPEnsemble, *args: Any) -> None:
        train(self, *args)
        runs.append((len(args[1]), self.stopped_epochs))

    monkeypatch.setattr(ResidualMLPEnsemble, "_train_on", spy)
    opts = {**TINY, "epochs": 400, "min_epochs": 5, "patience": 10, "lr": 1e-2}
    make_surrogate("mlp_ensemble", **opts).fit(x, y)
    (n_cal_fit, stopped), (n_refit, refit) = runs
    assert (n_cal_fit, n_refit) == (64, 80)
    assert stopped is not None
    assert 5 <= stopped < 400
    assert refit == stopped
    runs.clear()
    make_surrogate("mlp_ensemble", **opts, early_stopping=False).fit(x, y)
    assert [e for _, e in runs] == [400, 400]


def test_a_column_constant_in_training_does_not_move_predictions() -> None:
    """A column that only varies by rounding in the training rows must not blow up a
    candidate that differs there (it used to be divided by a spread of 1e-17)."""
    x, y = _data(40)
    x[:, 2] = 0.1 + 0.2 + np.random.default_rng(1).choice([0.0, 5.6e-17], 40)
    _mean, std = feature_scaling(x)
    assert np.isinf(std[2])
    assert np.all(np.isfinite(std[:2]))
    probe = x[:5].copy()
    moved = probe.copy()
    moved[:, 2] = 7.0
    for name, opts in (("mlp_ensemble", TINY), ("svr", {"n_members": 3})):
        model = make_surrogate(name, **opts).fit(x, y)
        assert np.allclose(model.predict(probe)[0], model.predict(moved)[0]), name


def test_forest_calibrates_out_of_bag_in_one_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _data(120)
    fits = []
    fit = RandomForestSurrogate._fit_members

    def count(self: RandomForestSurrogate, *args: Any) -> None:
        fits.append(len(args[0]))
        fit(self, *args)

    monkeypatch.setattr(RandomForestSurrogate, "_fit_members", count)
    model = make_surrogate("rf", n_estimators=60, min_samples_leaf=5).fit(x, y)
    assert fits == [120]
    assert isinstance(model, RandomForestSurrogate)
    oob_mean, oob_std = model._out_of_bag_predictions(x)
    assert np.all(np.isfinite(oob_mean))
    assert np.all(oob_std > 0)
    # out-of-bag errors are honest held-out errors: larger than the in-sample ones
    in_sample = np.abs(model.predict(x)[0] - y).mean()
    assert np.abs(oob_mean - y).mean() > in_sample
    # the 0.3 noise no tree can know is carried by the calibrated spread
    _, std = model.predict(x)
    assert 0.2 < float(np.median(std)) < 0.6
