"""Tests of the GP surrogate (surrogates/gp.py)."""

from __future__ import annotations

import math

import pytest
import torch
from gpytorch.kernels import MaternKernel, RBFKernel

from surrogates.gp import (
    GPPriors,
    default_device,
    fit_single_task_gp,
    hyperparameters_of,
    laplace_log_evidence,
    loo_log_predictive,
    map_objective,
    priors_of,
)


def truth(x: torch.Tensor) -> torch.Tensor:
    """A smooth 1-D function on [0, 10] (n x 1 -> n x 1)."""
    return torch.sin(x) + 0.1 * x


def train_data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(0.0, 10.0, 12, dtype=torch.double).unsqueeze(-1)
    return x, truth(x)


def test_default_device_matches_torch() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert default_device().type == expected


@pytest.mark.parametrize("priors", ["botorch", "gamma"])
def test_fits_smooth_function_with_calibrated_uncertainty(priors: GPPriors) -> None:
    torch.manual_seed(0)
    x, y = train_data()
    model = fit_single_task_gp(x, y, device="cpu", priors=priors)
    x_test = torch.linspace(0.2, 9.8, 49, dtype=torch.double).unsqueeze(-1)
    with torch.no_grad():
        post = model.posterior(x_test)
        mean = post.mean
        sd = post.variance.sqrt()
    err = (mean - truth(x_test)).abs()
    assert bool((err <= 3 * sd + 1e-6).all()), float((err / sd).max())
    assert float(err.max()) < 0.1
    # far from the data the model is less certain than at a training point
    with torch.no_grad():
        sd_far = model.posterior(torch.tensor([[14.0]], dtype=torch.double)).variance.sqrt()
        sd_near = model.posterior(x[5:6]).variance.sqrt()
    assert float(sd_far) > 10 * float(sd_near)


def test_hyperparameters_are_plain_floats() -> None:
    torch.manual_seed(0)
    x, y = train_data()
    bounds = torch.tensor([[0.0], [10.0]], dtype=torch.double)
    hp = hyperparameters_of(fit_single_task_gp(x, y, bounds=bounds, device="cpu"))
    assert set(hp) >= {"lengthscales", "outputscale", "noise", "outcome_mean", "outcome_std"}
    for values in hp.values():
        assert all(type(v) is float and math.isfinite(v) for v in values)
    assert len(hp["lengthscales"]) == 1
    assert hp["outcome_mean"][0] == pytest.approx(float(y.mean()))
    assert 0 < hp["noise"][0] < 0.01  # noise-free data


def test_two_outputs_and_warm_start() -> None:
    torch.manual_seed(0)
    x, y = train_data()
    y2 = torch.cat([y, -2.0 * y + 1.0], dim=-1)
    model = fit_single_task_gp(x, y2, device="cpu")
    assert model.num_outputs == 2
    assert len(hyperparameters_of(model)["noise"]) == 2
    x_more = torch.cat([x, torch.tensor([[4.4]], dtype=torch.double)])
    warm = fit_single_task_gp(x_more, truth(x_more), device="cpu", warm_start_state=_one(model))
    with torch.no_grad():
        pred = warm.posterior(torch.tensor([[4.4]], dtype=torch.double)).mean
    assert float(pred) == pytest.approx(float(truth(torch.tensor([[4.4]]))), abs=0.05)


def _one(model: object) -> dict[str, torch.Tensor]:
    """A state dict of a different shape (two outputs): mismatching entries are skipped."""
    return dict(model.state_dict())  # type: ignore[attr-defined]


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="n x d"):
        fit_single_task_gp(torch.zeros(3), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="n x d"):
        fit_single_task_gp(torch.zeros(3, 1), torch.zeros(4, 1))
    with pytest.raises(ValueError, match="no data"):
        fit_single_task_gp(torch.zeros(0, 1), torch.zeros(0, 1))


def test_gamma_priors_are_a_matern_kernel_whose_lengthscale_prior_has_the_dim_scaled_mode() -> None:
    torch.manual_seed(0)
    x = torch.rand(8, 4, dtype=torch.double)
    y = x.sum(dim=-1, keepdim=True)
    gamma = fit_single_task_gp(x, y, device="cpu", priors="gamma")
    assert isinstance(gamma.covar_module, MaternKernel)
    assert isinstance(fit_single_task_gp(x, y, device="cpu").covar_module, RBFKernel)
    prior = gamma.covar_module.lengthscale_prior
    mode = (prior.concentration - 1) / prior.rate
    assert float(mode) == pytest.approx(math.exp(math.sqrt(2) - 3) * math.sqrt(4))
    noise_prior = gamma.likelihood.noise_covar.noise_prior
    assert float((noise_prior.concentration - 1) / noise_prior.rate) == pytest.approx(math.exp(-5))
    # two outputs are a batch of two models: one set of lengthscales each
    two = fit_single_task_gp(x, torch.cat([y, -y], dim=-1), device="cpu", priors="gamma")
    assert len(hyperparameters_of(two)["lengthscales"]) == 8
    with pytest.raises(ValueError, match="priors"):
        fit_single_task_gp(x, y, device="cpu", priors="lognormal")  # type: ignore[arg-type]


@pytest.mark.parametrize(("priors", "shape"), [("gamma-2", 2.0), ("gamma-1.5", 1.5)])
def test_wider_gamma_priors_keep_the_mode_and_lengthen_the_fitted_lengthscales(
    priors: GPPriors, shape: float
) -> None:
    torch.manual_seed(0)
    x = torch.rand(8, 4, dtype=torch.double)
    y = x.sum(dim=-1, keepdim=True)  # linear: the data pull the lengthscales long
    wide = fit_single_task_gp(x, y, device="cpu", priors=priors)
    assert isinstance(wide.covar_module, MaternKernel)
    prior = wide.covar_module.lengthscale_prior
    assert float(prior.concentration) == shape
    mode = (prior.concentration - 1) / prior.rate
    assert float(mode) == pytest.approx(math.exp(math.sqrt(2) - 3) * math.sqrt(4))
    narrow = fit_single_task_gp(x, y, device="cpu", priors="gamma")
    ls_wide = hyperparameters_of(wide)["lengthscales"]
    ls_narrow = hyperparameters_of(narrow)["lengthscales"]
    assert all(w > n for w, n in zip(ls_wide, ls_narrow, strict=True))


@pytest.mark.parametrize("priors", ["botorch", "gamma"])
def test_extra_noise_learns_the_noise_a_too_small_reported_uncertainty_leaves_out(
    priors: GPPriors,
) -> None:
    torch.manual_seed(0)
    x = torch.linspace(0.0, 10.0, 30, dtype=torch.double).unsqueeze(-1)
    noise_std = 0.2
    y = truth(x) + noise_std * torch.randn_like(x)
    reported = torch.full_like(y, 1e-8)  # the instrument claims it is exact
    fixed = fit_single_task_gp(x, y, device="cpu", train_Yvar=reported, priors=priors)
    extra = fit_single_task_gp(
        x, y, device="cpu", train_Yvar=reported, priors=priors, extra_noise=True
    )
    hp = hyperparameters_of(extra)
    var_y = float(y.var())
    # in standardised units the true noise variance is noise_std^2 / var(y)
    assert noise_std**2 / var_y / 4 < hp["extra_noise"][0] < 4 * noise_std**2 / var_y
    assert hp["noise"][0] >= hp["extra_noise"][0]  # reported + extra
    assert "extra_noise" not in hyperparameters_of(fixed)
    # the fixed-noise GP interpolates the noise; the other smooths it out
    x_test = torch.linspace(0.2, 9.8, 49, dtype=torch.double).unsqueeze(-1)
    with torch.no_grad():
        err_fixed = (fixed.posterior(x_test).mean - truth(x_test)).abs().mean()
        err_extra = (extra.posterior(x_test).mean - truth(x_test)).abs().mean()
    assert float(err_extra) < float(err_fixed)
    # without reported uncertainties the option changes nothing
    a = hyperparameters_of(fit_single_task_gp(x, y, device="cpu", priors=priors))
    b = hyperparameters_of(fit_single_task_gp(x, y, device="cpu", priors=priors, extra_noise=True))
    assert a == b


def test_loo_log_predictive_equals_refitting_without_each_point() -> None:
    torch.manual_seed(0)
    x = torch.rand(10, 2, dtype=torch.double) * 5
    y = torch.sin(x[:, :1]) + 0.1 * x[:, 1:]
    model = fit_single_task_gp(x, y, device="cpu", priors="gamma")
    loo = loo_log_predictive(model)
    model.train()  # untransformed inputs, standardised targets
    xt, yt = model.train_inputs[0], model.train_targets.detach()
    with torch.no_grad():
        marginal = model.likelihood(model(xt), xt)
    model.eval()
    mean, cov = marginal.mean, marginal.covariance_matrix
    for i in range(10):
        keep = [j for j in range(10) if j != i]
        k_ki = cov[keep][:, i]
        solve = torch.linalg.solve(
            cov[keep][:, keep], torch.stack([yt[keep] - mean[keep], k_ki], -1)
        )
        mu = mean[i] + k_ki @ solve[:, 0]
        var = cov[i, i] - k_ki @ solve[:, 1]
        direct = -0.5 * (math.log(2 * math.pi * float(var)) + float(yt[i] - mu) ** 2 / float(var))
        assert float(loo[i]) == pytest.approx(direct, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("priors", ["loo", "evidence", "laplace"])
def test_selecting_priors_keeps_the_better_scoring_of_the_two_fits(priors: GPPriors) -> None:
    score = {
        "loo": loo_log_predictive,
        "evidence": map_objective,
        "laplace": laplace_log_evidence,
    }[priors]
    torch.manual_seed(0)
    x = torch.rand(12, 3, dtype=torch.double) * 10
    y = torch.sin(x[:, :1]) + x[:, 1:2] ** 2 / 10
    chosen = fit_single_task_gp(x, y, device="cpu", priors=priors)
    scores = {}
    for single in ("botorch", "gamma"):
        torch.manual_seed(0)
        model = fit_single_task_gp(x, y, device="cpu", priors=single)
        assert priors_of(model) == single
        scores[single] = float(score(model).sum())
    assert scores["botorch"] != scores["gamma"]
    assert priors_of(chosen) == max(scores, key=scores.__getitem__)
    assert float(score(chosen).sum()) == pytest.approx(max(scores.values()), rel=1e-6)


def test_laplace_evidence_prefers_the_prior_that_matches_the_data() -> None:
    # a draw from a GP with short lengthscales: the Gamma prior's mode (0.34 in 2-D) is
    # far nearer it than BoTorch's LogNormal prefers with few points; a nearly linear
    # function is better explained by a long lengthscale
    torch.manual_seed(1)
    x = torch.rand(14, 2, dtype=torch.double)
    linear = x[:, :1] + 0.5 * x[:, 1:]
    linear_model = fit_single_task_gp(x, linear, device="cpu", priors="laplace")
    wiggly = torch.sin(12 * x[:, :1]) * torch.cos(9 * x[:, 1:])
    wiggly_model = fit_single_task_gp(x, wiggly, device="cpu", priors="laplace")
    assert priors_of(linear_model) == "botorch"
    assert priors_of(wiggly_model) == "gamma"
    for model in (linear_model, wiggly_model):
        assert math.isfinite(float(laplace_log_evidence(model)))
