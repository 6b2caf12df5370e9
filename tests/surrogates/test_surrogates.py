"""Tests of the surrogates (surrogates/base.py, classical.py, gp_surrogate.py, mlp.py)."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
import torch
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.models.ensemble import EnsembleModel
from pymatgen.core import Composition

from models.errors import InvalidCampaignError, RegistryError
from surrogates.base import make_surrogate, surrogate_names
from surrogates.metrics import mae

# small settings so each fit takes a second or two on one shared core
SMALL: dict[str, dict[str, Any]] = {
    "rf": {"n_estimators": 100},
    "gbr": {"n_members": 3, "n_estimators": 150},
    "svr": {"n_members": 5},
    "gp": {},
    "mlp_ensemble": {"n_members": 3, "epochs": 150, "hidden": [64, 32], "batch_size": 32},
}
NAMES = sorted(SMALL)


@pytest.fixture(scope="module")
def fitted(composition_data: tuple[list[Composition], np.ndarray]) -> dict[str, Any]:
    comps, y = composition_data
    models = {
        name: make_surrogate(name, descriptor="magpie", **opts).fit(comps[:90], y[:90])
        for name, opts in SMALL.items()
    }
    return {"models": models, "test": comps[90:], "y_test": y[90:], "y_train": y[:90]}


def test_registry_names_every_surrogate() -> None:
    assert set(NAMES) <= set(surrogate_names())
    with pytest.raises(RegistryError, match="unknown surrogate 'nope'"):
        make_surrogate("nope")


@pytest.mark.parametrize("name", NAMES)
def test_beats_the_mean_predictor_on_held_out_compositions(
    name: str, fitted: dict[str, Any]
) -> None:
    model = fitted["models"][name]
    mean, std = model.predict(fitted["test"])
    baseline = mae(fitted["y_test"], np.full(len(mean), fitted["y_train"].mean()))
    assert mae(fitted["y_test"], mean) < 0.4 * baseline
    assert mean.shape == std.shape == (30,)
    assert np.all(std > 0)
    report = model.calibration(fitted["test"], fitted["y_test"])
    assert report["r2"] > 0.8
    assert 0.0 <= report["miscalibration_area"] < 0.35


@pytest.mark.parametrize("name", NAMES)
def test_botorch_posterior_matches_predict_and_backs_qlognei(
    name: str, fitted: dict[str, Any]
) -> None:
    model = fitted["models"][name]
    rows = model.featurize(fitted["test"])
    mean, std = model.predict(rows)
    bm = model.as_botorch_model()
    x = torch.as_tensor(rows, dtype=torch.double)
    with torch.no_grad():
        post = bm.posterior(x, observation_noise=(name == "gp"))
    assert np.allclose(post.mean.detach().reshape(-1).numpy(), mean, rtol=1e-5, atol=1e-6)
    assert np.allclose(post.variance.detach().reshape(-1).sqrt().numpy(), std, rtol=1e-4, atol=1e-6)
    if name != "gp":
        assert isinstance(bm, EnsembleModel)
    # one acquisition on top of it: q = 1 at three candidates, and a joint q = 2 batch
    acqf = qLogNoisyExpectedImprovement(bm, X_baseline=x[:10], prune_baseline=True)
    with torch.no_grad():
        values = acqf(x[10:13].unsqueeze(1))
        joint = acqf(x[13:15].unsqueeze(0))
    assert values.shape == (3,)
    assert torch.isfinite(values).all()
    assert torch.isfinite(joint).all()


@pytest.mark.parametrize("name", NAMES)
def test_fitted_surrogate_survives_pickling(name: str, fitted: dict[str, Any]) -> None:
    """Ray ships surrogates to actors by pickling them; predictions must survive that."""
    model = fitted["models"][name]
    copy = pickle.loads(pickle.dumps(model))
    for a, b in zip(model.predict(fitted["test"]), copy.predict(fitted["test"]), strict=True):
        assert np.allclose(a, b)


def test_mlp_ensemble_acquisition_has_gradients(fitted: dict[str, Any]) -> None:
    """The residual-MLP ensemble is differentiable, so gradient-based optimisers work on it."""
    model = fitted["models"]["mlp_ensemble"]
    rows = torch.as_tensor(model.featurize(fitted["test"]), dtype=torch.double)
    acqf = qLogNoisyExpectedImprovement(model.as_botorch_model(), X_baseline=rows[:10])
    x = rows[10:12].clone().unsqueeze(0).requires_grad_(True)
    acqf(x).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert float(x.grad.abs().sum()) > 0


def test_fits_are_seeded_and_leave_the_global_rng_alone() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.random((30, 4)), rng.random(30)
    opts = {"epochs": 5, "n_members": 2, "hidden": [8], "batch_size": 8}
    torch.manual_seed(11)
    first = make_surrogate("mlp_ensemble", seed=4, **opts).fit(x, y).predict(x)
    after = torch.rand(1)
    torch.manual_seed(11)
    second = make_surrogate("mlp_ensemble", seed=4, **opts).fit(x, y).predict(x)
    assert torch.equal(torch.rand(1), after)
    assert np.array_equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])
    other = make_surrogate("mlp_ensemble", seed=5, **opts).fit(x, y).predict(x)
    assert not np.allclose(other[0], first[0])


def test_feature_rows_and_materials_give_the_same_model(
    composition_data: tuple[list[Composition], np.ndarray],
) -> None:
    comps, y = composition_data
    a = make_surrogate("rf", descriptor="fractions", n_estimators=20).fit(comps[:60], y[:60])
    rows = a.featurize(comps[:60])
    b = make_surrogate("rf", n_estimators=20).fit(rows, y[:60])
    assert np.array_equal(a.predict(comps[60:])[0], b.predict(a.featurize(comps[60:]))[0])


def test_recalibration_scales_the_spread(
    composition_data: tuple[list[Composition], np.ndarray],
) -> None:
    comps, y = composition_data
    raw = make_surrogate("rf", descriptor="magpie", n_estimators=50, recalibrate=False)
    cal = make_surrogate("rf", descriptor="magpie", n_estimators=50)
    raw.fit(comps[:90], y[:90])
    cal.fit(comps[:90], y[:90])
    assert (raw.scale, raw.floor) == (1.0, 0.0)
    assert cal.scale != 1.0
    mean_raw, std_raw = raw.predict(comps[90:])
    mean_cal, std_cal = cal.predict(comps[90:])
    assert np.allclose(mean_raw, mean_cal)  # same members when refitted on all data
    assert np.allclose(std_cal**2, cal.scale**2 * std_raw**2 + cal.floor**2, rtol=1e-6)


def test_error_floor_is_carried_exactly_by_the_botorch_ensemble() -> None:
    """Members that agree everywhere but are wrong by a random offset: the fitted floor
    must account for the held-out errors, and the posterior variance equal a^2 s^2 + b^2."""
    rng = np.random.default_rng(2)
    x = rng.random((200, 2))
    y = x.sum(1) + rng.normal(0.0, 0.3, 200)  # noise no member can know
    model = make_surrogate("rf", n_estimators=30, min_samples_leaf=20).fit(x, y)
    assert 0.15 < model.floor < 0.45
    raw = make_surrogate("rf", n_estimators=30, min_samples_leaf=20, recalibrate=False)
    _, std_raw = raw.fit(x, y).predict(x[:20])
    _, std = model.predict(x[:20])
    assert np.allclose(std**2, model.scale**2 * std_raw**2 + model.floor**2, rtol=1e-6)


def test_bad_input_names_the_problem(
    composition_data: tuple[list[Composition], np.ndarray],
) -> None:
    comps, y = composition_data
    with pytest.raises(InvalidCampaignError, match=r"surrogate\.options\.n_estimators"):
        make_surrogate("rf", n_estimators=0)
    with pytest.raises(InvalidCampaignError, match=r"surrogate\.options\.bogus: unknown option"):
        make_surrogate("gp", bogus=True)
    with pytest.raises(InvalidCampaignError, match=r"surrogate\.options\.hidden"):
        make_surrogate("mlp_ensemble", hidden=[8, 0])
    with pytest.raises(InvalidCampaignError, match=r"surrogate\.options\.gamma"):
        make_surrogate("svr", gamma="wide")
    with pytest.raises(InvalidCampaignError, match=r"descriptor\.options\.size"):
        make_surrogate("rf", descriptor="sine_matrix", descriptor_options={"size": -1})
    with pytest.raises(RegistryError, match="unknown descriptor"):
        make_surrogate("rf", descriptor="nope")
    with pytest.raises(ValueError, match=r"set surrogate\.options\.descriptor"):
        make_surrogate("rf").fit(comps[:10], y[:10])
    with pytest.raises(ValueError, match="9 targets"):
        make_surrogate("rf", descriptor="fractions").fit(comps[:10], y[:9])
    with pytest.raises(RuntimeError, match="not fitted"):
        make_surrogate("svr").predict(np.zeros((2, 3)))
    fitted = make_surrogate("svr").fit(np.random.default_rng(0).random((20, 3)), y[:20])
    with pytest.raises(ValueError, match="expected 3 features, got 4"):
        fitted.predict(np.zeros((2, 4)))
