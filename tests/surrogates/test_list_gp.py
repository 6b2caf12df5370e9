"""The list GP (surrogates/list_gp.py): exact posterior against GPyTorch's, the bound."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from botorch.models import SingleTaskGP
from gpytorch.kernels import MaternKernel
from gpytorch.priors import GammaPrior

from models.errors import InvalidCampaignError
from surrogates.base import make_surrogate
from surrogates.gp import gamma_prior_modules
from surrogates.gp_fit import log_scale
from surrogates.list_gp import ListGPSurrogate


def truth(x: np.ndarray) -> np.ndarray:
    """A smooth noise-free function of 3 inputs in the unit cube."""
    return np.sin(3.0 * x[:, 0]) + (x[:, 1] - 0.5) ** 2 - 0.5 * x[:, 2]


def data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).random((n, 3))
    return x, truth(x)


def gpytorch_posterior(
    gp: ListGPSurrogate, x: np.ndarray, y: np.ndarray, at: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The latent posterior of a SingleTaskGP with ``gp``'s hyperparameters on (x, y)."""
    z = (y - gp._y_mean) / gp._y_std
    model: Any = SingleTaskGP(
        torch.as_tensor(x), torch.as_tensor(z).unsqueeze(-1), outcome_transform=None
    )
    fitted: Any = gp.as_botorch_model()
    # the hyperparameters' values (their raw coordinates are on a log scale in ``gp``)
    model.covar_module.lengthscale = fitted.covar_module.lengthscale.detach()
    model.likelihood.noise = fitted.likelihood.noise.detach()
    model.mean_module.constant.data.copy_(fitted.mean_module.constant.detach())
    model.eval()
    with torch.no_grad():
        post = model.posterior(torch.as_tensor(at))
    mean = post.mean.reshape(-1).numpy() * gp._y_std + gp._y_mean
    return mean, post.variance.reshape(-1).sqrt().numpy() * gp._y_std


def test_mean_and_std_are_the_exact_gp_posterior() -> None:
    x, y = data(30)
    gp = make_surrogate("list_gp", seed=0).fit(x, y)
    assert isinstance(gp, ListGPSurrogate)
    at, _ = data(200, seed=1)
    mean, std = gp.predict(at)
    ref_mean, ref_std = gpytorch_posterior(gp, x, y, at)
    np.testing.assert_allclose(mean, ref_mean, atol=1e-6)
    np.testing.assert_allclose(std, ref_std, rtol=1e-4, atol=1e-6)
    # a smooth truth is learned: small error where the data are
    err = np.abs(mean - truth(at))
    assert float(np.median(err)) < 0.05
    assert float(np.mean(err <= 3 * std + 1e-3)) > 0.9


def test_conditioned_keeps_hyperparameters_and_conditions_on_every_row() -> None:
    x, y = data(60)
    gp = make_surrogate("list_gp", seed=0, max_fit=20).fit(x[:20], y[:20])
    assert isinstance(gp, ListGPSurrogate)
    more = gp.conditioned(x, y)
    at, _ = data(100, seed=2)
    mean, std = more.predict(at)
    ref_mean, ref_std = gpytorch_posterior(gp, x, y, at)
    np.testing.assert_allclose(mean, ref_mean, atol=1e-6)
    np.testing.assert_allclose(std, ref_std, rtol=1e-4, atol=1e-6)
    assert float(np.mean(np.abs(mean - truth(at)))) < float(
        np.mean(np.abs(gp.predict(at)[0] - truth(at)))
    )
    # a fit on more rows than max_fit conditions on all of them
    big = make_surrogate("list_gp", seed=0, max_fit=20).fit(x, y)
    assert isinstance(big, ListGPSurrogate)
    assert big._x.shape[0] == 60
    with pytest.raises(ValueError, match="feature rows"):
        gp.conditioned(x[:, :2], y)


@pytest.mark.parametrize("bound_points", [5, 40, 200])
def test_the_bound_is_never_below_the_exact_std(bound_points: int) -> None:
    x, y = data(80)
    gp = make_surrogate("list_gp", seed=0, bound_points=bound_points).fit(x, y)
    assert isinstance(gp, ListGPSurrogate)
    at, _ = data(500, seed=3)
    mean, bound = gp.bounded_predictions(at)
    exact = gp.exact_std(at)
    np.testing.assert_allclose(mean.numpy(), gp.predict(at)[0], atol=1e-9)
    assert bool((bound >= exact - 1e-9).all())
    if bound_points >= 80:  # the subset is every row: the bound is exact
        np.testing.assert_allclose(bound.numpy(), exact.numpy(), rtol=1e-6, atol=1e-9)
    else:
        assert float((bound - exact).max()) > 1e-4


def test_matern_gamma_kernel_is_the_bo_planners_and_its_posterior_is_exact() -> None:
    x, y = data(40)
    gp = make_surrogate("list_gp", seed=0, kernel="matern_gamma").fit(x, y)
    assert isinstance(gp, ListGPSurrogate)
    kernel = gp.as_botorch_model().covar_module
    assert isinstance(kernel, MaternKernel)
    assert kernel.nu == 2.5
    reference, _ = gamma_prior_modules(3, infer_noise=True)
    prior = kernel.lengthscale_prior
    assert isinstance(prior, GammaPrior)
    assert float(prior.concentration) == float(reference.lengthscale_prior.concentration)
    assert float(prior.rate) == float(reference.lengthscale_prior.rate)
    at, _ = data(200, seed=1)
    mean, std = gp.predict(at)
    # the exact posterior of a SingleTaskGP with the same kernel and hyperparameters
    z = (y - gp._y_mean) / gp._y_std
    model = SingleTaskGP(
        torch.as_tensor(x),
        torch.as_tensor(z).unsqueeze(-1),
        covar_module=gamma_prior_modules(3, infer_noise=True)[0],
        outcome_transform=None,
    )
    log_scale(model)  # the raw coordinates of ``gp``'s hyperparameters
    state = {k: v for k, v in gp.as_botorch_model().state_dict().items() if "outcome" not in k}
    model.load_state_dict(state, strict=False)
    model.eval()
    with torch.no_grad():
        post = model.posterior(torch.as_tensor(at))
    np.testing.assert_allclose(
        mean, post.mean.reshape(-1).numpy() * gp._y_std + gp._y_mean, atol=1e-6
    )
    np.testing.assert_allclose(
        std, post.variance.reshape(-1).sqrt().numpy() * gp._y_std, rtol=1e-4, atol=1e-6
    )
    assert float(np.median(np.abs(mean - truth(at)))) < 0.05
    bound = gp.bounded_predictions(at)[1].numpy()
    assert bool((bound >= std - 1e-9).all())
    with pytest.raises(InvalidCampaignError, match="kernel"):
        make_surrogate("list_gp", kernel="matern")
