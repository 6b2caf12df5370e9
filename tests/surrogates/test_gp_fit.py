"""Log-scale hyperparameter coordinates (surrogates/gp_fit.py): same model, shorter fit."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from botorch.models import SingleTaskGP
from botorch.models.transforms import Standardize
from botorch.optim.fit import fit_gpytorch_mll_scipy
from gpytorch.mlls import ExactMarginalLogLikelihood

from surrogates.gp import gamma_prior_modules
from surrogates.gp_fit import log_scale


def problem(n: int, d: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth truth of 4 of ``d`` unit-cube columns (the rest irrelevant), noise-free."""
    x = torch.as_tensor(np.random.default_rng(0).random((n, d)))
    y = x[:, :3].sum(-1) + 0.3 * torch.sin(5.0 * x[:, 3])
    return x, y.unsqueeze(-1)


def fit(model: SingleTaskGP) -> tuple[float, int]:
    """Negative MAP objective per point after BoTorch's L-BFGS-B fit, and its evaluations."""
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    mll.train()
    result = fit_gpytorch_mll_scipy(mll)
    return float(result.fval), int(result.step)


def test_values_bounds_and_priors_are_kept() -> None:
    x, y = problem(20)
    model: Any = SingleTaskGP(x, y, outcome_transform=Standardize(m=1))
    before = model.covar_module.lengthscale.detach().clone(), float(model.likelihood.noise)
    assert log_scale(model) == 2  # the lengthscales and the noise
    torch.testing.assert_close(model.covar_module.lengthscale.detach(), before[0])
    assert abs(float(model.likelihood.noise) - before[1]) < 1e-12
    constraint = model.covar_module.raw_lengthscale_constraint
    assert constraint.enforced
    # any raw coordinate maps above the old box bound
    model.covar_module.raw_lengthscale.data.fill_(-50.0)
    assert float(model.covar_module.lengthscale.min()) >= 2.5e-2
    assert log_scale(model) == 0  # nothing left to change
    priors: Any = model.named_priors()
    assert {name for name, *_ in priors} == {
        "covar_module.lengthscale_prior",
        "likelihood.noise_covar.noise_prior",
    }


def test_the_fit_reaches_the_same_optimum_in_fewer_evaluations() -> None:
    for n in (10, 40, 120):
        x, y = problem(n)
        torch.manual_seed(0)
        linear, linear_steps = fit(SingleTaskGP(x, y, outcome_transform=Standardize(m=1)))
        torch.manual_seed(0)
        model = SingleTaskGP(x, y, outcome_transform=Standardize(m=1))
        log_scale(model)
        logged, logged_steps = fit(model)
        assert logged <= linear + 1e-3, (n, logged, linear)
        assert logged_steps < linear_steps, (n, logged_steps, linear_steps)


def test_the_gamma_prior_modules_too() -> None:
    x, y = problem(30)

    def gamma_model() -> SingleTaskGP:
        kernel, likelihood = gamma_prior_modules(x.shape[1], infer_noise=True)
        return SingleTaskGP(
            x, y, covar_module=kernel, likelihood=likelihood, outcome_transform=Standardize(m=1)
        )

    reference, _ = fit(gamma_model())
    model = gamma_model()
    assert log_scale(model) == 2
    logged, _ = fit(model)
    assert logged <= reference + 1e-3


def _grads(model: SingleTaskGP, mll: Any) -> tuple[float, dict[str, torch.Tensor]]:
    model.train()
    model.zero_grad()
    x = model.train_inputs[0]
    value = mll(model(x), model.train_targets, x).sum()
    value.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(value), grads


def test_the_closed_form_gradient_equals_autograd_through_gpytorch() -> None:
    from surrogates.gp_fit import CholeskyMarginalLogLikelihood

    x, y = problem(40, d=4)
    for m in (1, 2):  # one output, and a batch of two (independent outputs)
        yy = torch.cat([y, -2.0 * y + x[:, :1]], dim=-1)[:, :m]
        kernel, likelihood = gamma_prior_modules(
            4, infer_noise=True, batch_shape=torch.Size([m]) if m > 1 else torch.Size()
        )
        model: Any = SingleTaskGP(
            x, yy, covar_module=kernel, likelihood=likelihood, outcome_transform=Standardize(m=m)
        )
        log_scale(model)
        with torch.no_grad():  # away from the initial values, where all gradients look alike
            model.covar_module.raw_lengthscale.add_(torch.linspace(-0.5, 0.5, 4))
        ref_value, ref = _grads(model, ExactMarginalLogLikelihood(model.likelihood, model))
        value, ours = _grads(model, CholeskyMarginalLogLikelihood(model.likelihood, model))
        assert abs(value - ref_value) < 1e-10
        assert ref.keys() == ours.keys()
        assert len(ours) >= 3  # lengthscales, noise, mean
        for name, grad in ref.items():
            torch.testing.assert_close(ours[name], grad, rtol=1e-8, atol=1e-10, msg=name)


def test_the_density_matches_torch_and_jitters_a_singular_covariance() -> None:
    from surrogates.gp_fit import gaussian_log_density

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 6, 6, generator=gen, dtype=torch.double)
    covar = a @ a.mT + 0.1 * torch.eye(6, dtype=torch.double)
    diff = torch.randn(3, 6, generator=gen, dtype=torch.double)
    ref = torch.distributions.MultivariateNormal(torch.zeros(6, dtype=torch.double), covar)
    torch.testing.assert_close(gaussian_log_density(covar, diff), ref.log_prob(diff))
    # rank 1: a plain Cholesky fails; GPyTorch's jitter makes it a finite density
    v = torch.ones(6, 1, dtype=torch.double)
    assert torch.isfinite(gaussian_log_density(v @ v.T, torch.zeros(6, dtype=torch.double)))
