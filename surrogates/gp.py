"""Gaussian-process surrogates (exact GPs via BoTorch and GPyTorch).

:func:`fit_single_task_gp` fits BoTorch's ``SingleTaskGP`` by maximising the marginal
log likelihood (Rasmussen & Williams, *Gaussian Processes for Machine Learning*, 2006,
ch. 5) plus the log prior of the hyperparameters (a MAP fit). Two sets of priors, and
ways to choose between them (``priors``):

* ``"botorch"``: BoTorch's defaults: an RBF kernel whose lengthscale prior is
  ``LogNormal(sqrt(2) + log(d) / 2, sqrt(3))`` (Hvarfner et al., "Vanilla Bayesian
  Optimization Performs Great in High Dimensions", ICML 2024) and a noise prior
  ``LogNormal(-4, 1)``.
* ``"gamma"``: the same modes (lengthscale ``exp(sqrt(2) - 3) * sqrt(d)``, noise
  ``exp(-5)`` in standardised units) carried by Gamma priors, ``Gamma(3, .)`` for the
  lengthscales and ``Gamma(2, .)`` for the noise, on a Matern-5/2 kernel: what BayBE 0.15
  uses by default (Fiedler et al., "BayBE: a Bayesian Back End for experimental planning
  in the low-to-no-data regime", Digital Discovery 2025). The LogNormal's right tail is
  heavy (``sigma = sqrt(3)``: its mean is ``exp(4.5)``, about 90 times its mode; the
  Gamma's is 1.5 times), so with a handful of observations little holds a MAP lengthscale
  back from growing long; the Gamma prior keeps it near the mode until the data say
  otherwise.
* ``"gamma-2"``, ``"gamma-1.5"``: the ``"gamma"`` GP with a lengthscale prior of shape 2
  or 1.5 at the same mode, whose tails lie between the two (mean 2 and 3 times the mode).
* ``"loo"``: both GPs fitted, and the one whose leave-one-out predictive log density of
  the observations is higher is kept (Rasmussen & Williams, sec. 5.4.2: the closed-form
  LOO of a GP costs one more Cholesky factorisation).
* ``"evidence"``: the same choice by the fitted objective, the log marginal likelihood
  plus the log prior density at the MAP hyperparameters (:func:`map_objective`).
* ``"laplace"``: the same choice by a Laplace approximation of the log evidence
  (:func:`laplace_log_evidence`).

Neither prior wins on every pool of ``docs/benchmarks.md``; the three criteria were
measured there as ways of letting the data choose, and none tracks which GP finds the
optimum sooner: LOO keeps BoTorch's GP on nearly every fit, the other two the Gamma one.

Inputs are normalised to the unit cube and outcomes standardised inside the model, so
callers pass and receive values in their own units.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms import Normalize, Standardize
from botorch.models.utils.gpytorch_modules import MIN_INFERRED_NOISE_LEVEL
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import MaternKernel
from gpytorch.likelihoods import FixedNoiseGaussianLikelihood, GaussianLikelihood, Likelihood
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior, LogNormalPrior, Prior
from torch import Tensor

from surrogates.gp_fit import CholeskyMarginalLogLikelihood, log_scale

logger = logging.getLogger(__name__)

GPPriors = Literal["botorch", "gamma", "loo", "evidence", "laplace", "gamma-2", "gamma-1.5"]
"""The hyperparameter priors of :func:`fit_single_task_gp` (see the module docstring)."""

MIN_LENGTHSCALE = 2.5e-2
"""Lower bound of every lengthscale (unit-cube units), as BoTorch's default kernel has."""

__all__ = [
    "GPPriors",
    "default_device",
    "fit_shared_hyperparameter_gp",
    "fit_single_task_gp",
    "gamma_prior_modules",
    "hyperparameters_of",
    "laplace_log_evidence",
    "loo_log_predictive",
    "map_objective",
    "priors_of",
]

_SINGLE_PRIORS: tuple[GPPriors, ...] = ("botorch", "gamma")


def default_device() -> torch.device:
    """CUDA when PyTorch sees a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def gamma_prior_modules(
    d: int,
    *,
    infer_noise: bool,
    batch_shape: torch.Size | None = None,
    lengthscale_shape: float = 3.0,
) -> tuple[MaternKernel, GaussianLikelihood | None]:
    """The ``"gamma"`` priors' kernel and likelihood for ``d`` input columns.

    Args:
        d: Number of input columns (ARD lengthscales).
        infer_noise: Whether the likelihood is inferred (``False``: the noise is known and
            no likelihood is returned; BoTorch builds the fixed-noise one).
        batch_shape: ``torch.Size([m])`` for ``m > 1`` outputs (BoTorch models them as a
            batch), else empty.

    Returns:
        A Matern-5/2 kernel with a ``Gamma(3, rate)`` prior of mode
        ``exp(sqrt(2) - 3) * sqrt(d)`` on every lengthscale (bounded below by
        :data:`MIN_LENGTHSCALE`, started at the mode), and a Gaussian likelihood with a
        ``Gamma(2, rate)`` noise prior of mode ``exp(-5)`` (bounded below by BoTorch's
        ``MIN_INFERRED_NOISE_LEVEL``, started at the mode), or ``None``.
    """
    ls_mode = math.exp(math.sqrt(2.0) - 3.0) * math.sqrt(d)
    lengthscale_prior = GammaPrior(lengthscale_shape, (lengthscale_shape - 1.0) / ls_mode)
    batch_shape = torch.Size() if batch_shape is None else batch_shape
    kernel = MaternKernel(
        nu=2.5,
        ard_num_dims=d,
        batch_shape=batch_shape,
        lengthscale_prior=lengthscale_prior,
        lengthscale_constraint=GreaterThan(MIN_LENGTHSCALE, transform=None, initial_value=ls_mode),
    )
    if not infer_noise:
        return kernel, None
    noise_mode = math.exp(-5.0)
    likelihood = GaussianLikelihood(
        batch_shape=batch_shape,
        noise_prior=GammaPrior(2.0, 1.0 / noise_mode),
        noise_constraint=GreaterThan(
            MIN_INFERRED_NOISE_LEVEL, transform=None, initial_value=noise_mode
        ),
    )
    return kernel, likelihood


def fit_single_task_gp(
    train_X: Tensor,  # noqa: N803 (BoTorch's names)
    train_Y: Tensor,  # noqa: N803
    *,
    bounds: Tensor | None = None,
    device: torch.device | str | None = None,
    warm_start_state: Mapping[str, Tensor] | None = None,
    train_Yvar: Tensor | None = None,  # noqa: N803
    maxiter: int | None = None,
    priors: GPPriors = "botorch",
    extra_noise: bool = False,
) -> SingleTaskGP:
    """Fit an exact GP to data, with input normalisation and outcome standardisation.

    With ``train_Yvar`` the observation noise is known (BoTorch's fixed-noise likelihood)
    instead of inferred: use it when the instrument reports an uncertainty.

    Args:
        train_X: ``n x d`` inputs.
        train_Y: ``n x m`` outputs (``m`` independent outputs share nothing but inputs).
        bounds: ``2 x d`` lower/upper input bounds for the normalisation; learned from
            ``train_X`` when omitted.
        device: Where to fit; :func:`default_device` when omitted. Tensors are moved there
            and cast to double precision.
        warm_start_state: A ``state_dict()`` of an earlier model of the same shape; its
            hyperparameters (lengthscales, noise, mean) start the optimisation.
        train_Yvar: ``n x m`` known noise variances of ``train_Y`` (same units squared).
        maxiter: Iteration limit of the L-BFGS-B fit (BoTorch's default when ``None``).
            ``0`` with ``warm_start_state`` fits nothing: the model keeps the given
            hyperparameters and is only conditioned on the data.
        priors: The kernel and its hyperparameter priors (see the module docstring).
        extra_noise: With ``train_Yvar``, treat the reported variances as a floor: the
            likelihood adds one inferred noise variance to them (under the noise prior of
            ``priors``, at least BoTorch's ``MIN_INFERRED_NOISE_LEVEL`` in standardised
            units), for what the reported uncertainty leaves out. Without ``train_Yvar``
            it changes nothing (the noise is inferred anyway).

    Returns:
        The fitted model, in eval mode, on ``device``.

    Raises:
        ValueError: If the shapes do not fit together, there is no data, or ``priors`` is
            unknown.
    """
    if priors not in ("botorch", "gamma", "loo", "evidence", "laplace", "gamma-2", "gamma-1.5"):
        raise ValueError(
            f"priors must be 'botorch', 'gamma', 'loo', 'evidence' or 'laplace', got {priors!r}"
        )
    if train_X.dim() != 2 or train_Y.dim() != 2 or train_X.shape[0] != train_Y.shape[0]:
        raise ValueError(
            f"expected n x d inputs and n x m outputs, got {tuple(train_X.shape)} "
            f"and {tuple(train_Y.shape)}"
        )
    if train_X.shape[0] == 0:
        raise ValueError("cannot fit a GP to no data")
    if train_Yvar is not None and train_Yvar.shape != train_Y.shape:
        raise ValueError(
            f"train_Yvar has shape {tuple(train_Yvar.shape)}, train_Y {tuple(train_Y.shape)}"
        )
    dev = torch.device(device) if device is not None else default_device()
    x = train_X.to(dev, torch.double)
    y = train_Y.to(dev, torch.double)
    if priors in ("loo", "evidence", "laplace"):
        score = {
            "loo": loo_log_predictive,
            "evidence": map_objective,
            "laplace": laplace_log_evidence,
        }[priors]
        best: tuple[float, SingleTaskGP] | None = None
        for single in _SINGLE_PRIORS:
            fitted = fit_single_task_gp(
                x,
                y,
                bounds=bounds,
                device=dev,
                warm_start_state=warm_start_state,
                train_Yvar=train_Yvar,
                maxiter=maxiter,
                priors=single,
                extra_noise=extra_noise,
            )
            value = float(score(fitted).sum())
            logger.debug("%s priors: %s %.4f", single, priors, value)
            # ties (and NaN scores) keep the first, BoTorch's priors
            if best is None or value > best[0]:
                best = (value, fitted)
        assert best is not None
        return best[1]
    d, m = x.shape[-1], y.shape[-1]
    normalize = Normalize(d=d, bounds=None if bounds is None else bounds.to(dev, torch.double))
    yvar = None if train_Yvar is None else train_Yvar.to(dev, torch.double).clamp_min(1e-12)
    modules: dict[str, object] = {}
    if priors.startswith("gamma"):
        batch = torch.Size([m]) if m > 1 else torch.Size()
        shape = 3.0 if priors == "gamma" else float(priors.split("-", 1)[1])
        kernel, likelihood = gamma_prior_modules(
            d, infer_noise=yvar is None, batch_shape=batch, lengthscale_shape=shape
        )
        modules["covar_module"] = kernel
        if likelihood is not None:
            modules["likelihood"] = likelihood
    model = SingleTaskGP(
        x,
        y,
        train_Yvar=yvar,
        input_transform=normalize,
        outcome_transform=Standardize(m=m),
        **modules,
    ).to(dev)
    if extra_noise and yvar is not None:
        model.likelihood = _reported_plus_inferred_noise(model, priors)
    log_scale(model)  # the same model, a shorter fit: see surrogates/gp_fit.py
    if warm_start_state is not None:
        _load_hyperparameters(model, warm_start_state)
        if maxiter == 0:
            model.eval()
            return model
    mll = CholeskyMarginalLogLikelihood(model.likelihood, model)
    kwargs: dict[str, object] = {}
    if maxiter is not None:
        kwargs["optimizer_kwargs"] = {"options": {"maxiter": maxiter}}
    fit_gpytorch_mll(mll, **kwargs)  # type: ignore[arg-type]
    model.eval()
    logger.debug("fitted GP on %d points (d=%d, m=%d) on %s", x.shape[0], d, m, dev)
    return model


def fit_shared_hyperparameter_gp(
    train_X: Tensor,  # noqa: N803 (BoTorch's names)
    train_Y: Tensor,  # noqa: N803
    *,
    bounds: Tensor | None = None,
    device: torch.device | str | None = None,
    maxiter: int | None = None,
) -> SingleTaskGP:
    """An exact GP of several outputs that share one set of hyperparameters.

    The hyperparameters are fitted once, to the first principal component of the
    standardised outputs (the direction along which they vary most), and copied into a
    ``SingleTaskGP`` of all outputs: one L-BFGS fit instead of one per output, for
    outputs that change together (the descriptors of one spectrum).

    Args:
        train_X: ``n x d`` inputs.
        train_Y: ``n x m`` outputs.
        bounds: ``2 x d`` input bounds for the normalisation (see
            :func:`fit_single_task_gp`).
        device: Where to fit (:func:`default_device` when omitted).
        maxiter: Iteration limit of the fit.

    Returns:
        The model of all ``m`` outputs, in eval mode.

    Raises:
        ValueError: If the shapes do not fit together or there is no data.
    """
    if train_Y.dim() != 2 or train_Y.shape[-1] < 1:
        raise ValueError(f"expected n x m outputs, got {tuple(train_Y.shape)}")
    y = train_Y.to(torch.double)
    z = (y - y.mean(dim=0)) / y.std(dim=0).clamp_min(1e-12) if y.shape[0] > 1 else y
    if y.shape[-1] > 1 and y.shape[0] > 1:
        _, _, v = torch.linalg.svd(z, full_matrices=False)
        pc = z @ v[0]
    else:
        pc = z[:, 0]
    single = fit_single_task_gp(train_X, pc[:, None], bounds=bounds, device=device, maxiter=maxiter)
    dev = next(single.parameters()).device
    x = train_X.to(dev, torch.double)
    normalize = Normalize(
        d=x.shape[-1], bounds=None if bounds is None else bounds.to(dev, torch.double)
    )
    model = SingleTaskGP(
        x, y.to(dev), input_transform=normalize, outcome_transform=Standardize(m=y.shape[-1])
    ).to(dev)
    log_scale(model)  # the raw coordinates of ``single``'s
    own = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in single.named_parameters():
            if name in own and name.rsplit(".", 1)[-1].startswith("raw_"):
                own[name].copy_(value.expand_as(own[name]) if own[name].dim() else value)
    model.eval()
    return model


def _marginal(model: SingleTaskGP) -> tuple[Tensor, Tensor, Tensor]:
    """The model's prior predictive of its own (standardised) training targets:
    ``(mean, covariance, targets)``, shaped ``(m x) n``, ``(m x) n x n``, ``(m x) n``."""
    was_training = model.training
    model.train()  # BoTorch keeps the untransformed inputs in train mode
    try:
        x = model.train_inputs[0]
        targets = model.train_targets
        with torch.no_grad():
            prior = model(x)
            marginal = model.likelihood(prior, x)
            mean = marginal.mean
            cov = marginal.covariance_matrix
    finally:
        model.train(was_training)
    return mean, cov, targets


def loo_log_predictive(model: SingleTaskGP) -> Tensor:
    """The leave-one-out predictive log density of each training observation.

    In closed form (Rasmussen & Williams, *Gaussian Processes for Machine Learning*, 2006,
    eq. 5.10-5.12): with ``K`` the covariance of the noisy targets and ``a = K^-1 (y - mu)``,
    observation ``i`` left out is predicted with mean ``y_i - a_i / [K^-1]_ii`` and variance
    ``1 / [K^-1]_ii``. Hyperparameters stay those fitted to all the data. Standardised
    outcome units, so two models of the same data compare directly.

    Args:
        model: A fitted model from :func:`fit_single_task_gp` (exact, single task).

    Returns:
        ``n`` log densities (``m x n`` for ``m`` outputs).
    """
    mean, cov, targets = _marginal(model)
    targets = targets.detach()
    n = targets.shape[-1]
    eye = torch.eye(n, dtype=cov.dtype, device=cov.device)
    chol, info = torch.linalg.cholesky_ex(cov + 1e-10 * eye)
    if bool((info != 0).any()):
        return torch.full_like(targets, -math.inf)
    k_inv = torch.cholesky_solve(eye.expand_as(cov), chol)
    diag = torch.diagonal(k_inv, dim1=-2, dim2=-1).clamp_min(1e-300)
    alpha = (k_inv @ (targets - mean).unsqueeze(-1)).squeeze(-1)
    var = 1.0 / diag
    resid = alpha / diag
    return -0.5 * (torch.log(2 * math.pi * var) + resid**2 / var)


def map_objective(model: SingleTaskGP) -> Tensor:
    """The objective a MAP fit maximises, at the fitted hyperparameters: the log marginal
    likelihood plus the log prior density of the hyperparameters, per observation (as
    GPyTorch's ``ExactMarginalLogLikelihood`` reports it). One value per output."""
    was_training = model.training
    model.train()
    try:
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        with torch.no_grad():
            x = model.train_inputs[0]
            value = mll(model(x), model.train_targets, x)
    finally:
        model.train(was_training)
    return value.reshape(-1)


def laplace_log_evidence(model: SingleTaskGP) -> Tensor:
    """The log evidence ``log p(y)`` of the model's priors, by a Laplace approximation.

    The log posterior of the hyperparameters (lengthscales and inferred noise, in log
    space so that the approximation does not depend on their scale; the mean constant,
    flat under both priors, stays at its fit) is expanded to second order at the MAP fit
    (MacKay, "Bayesian interpolation", Neural Computation 1992; Rasmussen & Williams,
    sec. 5.2): ``log p(y) ~ log p(y | t*) + log p(t*) + k/2 log(2 pi) - 1/2 log det H``.
    Unlike :func:`map_objective`, a prior concentrated near the fit is not rewarded for
    its height alone: its narrowness is paid back through ``det H``. Curvatures below
    ``1e-2`` (a fit at a bound) are raised to it.

    Args:
        model: A fitted model from :func:`fit_single_task_gp` (its positive
            hyperparameters on any raw coordinate: the expansion is in their logarithms).

    Returns:
        A one-element tensor (the log evidence in standardised outcome units).
    """
    was_training = model.training
    model.train()
    try:
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        x = model.train_inputs[0]
        targets = model.train_targets
        n = targets.shape[-1]
        # positive hyperparameters, whatever their raw coordinate (see surrogates/gp_fit.py)
        gp: Any = model
        bounded = {
            name: constraint
            for name, raw, constraint in gp.named_parameters_and_constraints()
            if name.rsplit(".", 1)[-1].startswith("raw_")
            and "mean_module" not in name
            and constraint is not None
            and bool((constraint.transform(raw) > 0).all())
        }
        names = list(bounded)
        params = dict(model.named_parameters())
        shapes = [params[k].shape for k in names]
        phi0 = torch.cat(
            [bounded[k].transform(params[k]).detach().log().reshape(-1) for k in names]
        )

        # model and likelihood see the swapped values: both are called inside one module
        def total(phi: Tensor) -> Tensor:
            raws, start = {}, 0
            for k, shape in zip(names, shapes, strict=True):
                size = math.prod(shape)
                value = phi[start : start + size].exp().reshape(shape)
                raws[k] = bounded[k].inverse_transform(value)
                start += size
            return (
                torch.func.functional_call(
                    _MllOf(mll), {f"mll.model.{k}": v for k, v in raws.items()}, (x, targets)
                )
                * n
                + phi.sum()
            )

        value = total(phi0).detach()
        hess = torch.autograd.functional.hessian(total, phi0)
        eig = torch.linalg.eigvalsh(-0.5 * (hess + hess.T)).clamp_min(1e-2)
        k = phi0.numel()
        out = value + 0.5 * k * math.log(2 * math.pi) - 0.5 * torch.log(eig).sum()
    finally:
        model.train(was_training)
    return out.detach().reshape(1)


class _MllOf(torch.nn.Module):
    """``ExactMarginalLogLikelihood`` of a model at its own training data, as one module
    (so that :func:`torch.func.functional_call` swaps parameters in model and likelihood)."""

    def __init__(self, mll: ExactMarginalLogLikelihood) -> None:
        super().__init__()
        self.mll = mll

    def forward(self, x: Tensor, targets: Tensor) -> Tensor:
        return self.mll(self.mll.model(x), targets, x).sum()


def priors_of(model: SingleTaskGP) -> GPPriors:
    """Which of the two sets of priors ``model`` was fitted with (its kernel tells:
    Matern-5/2 for ``"gamma"``, BoTorch's RBF for ``"botorch"``)."""
    base = getattr(model.covar_module, "base_kernel", model.covar_module)
    return "gamma" if isinstance(base, MaternKernel) else "botorch"


def _reported_plus_inferred_noise(model: SingleTaskGP, priors: GPPriors) -> Likelihood:
    """A fixed-noise likelihood of ``model``'s (standardised) reported variances plus one
    learned variance, whose prior and lower bound are those of an inferred noise."""
    fixed = model.likelihood
    assert isinstance(fixed, FixedNoiseGaussianLikelihood)
    prior: Prior
    if priors.startswith("gamma"):
        prior = GammaPrior(2.0, math.exp(5.0))
        start = math.exp(-5.0)
    else:
        prior = LogNormalPrior(loc=-4.0, scale=1.0)
        start = float(prior.mode)
    return FixedNoiseGaussianLikelihood(
        noise=fixed.noise_covar.noise.detach().clone(),
        learn_additional_noise=True,
        batch_shape=model._aug_batch_shape,
        noise_prior=prior,
        noise_constraint=GreaterThan(MIN_INFERRED_NOISE_LEVEL, transform=None, initial_value=start),
    ).to(fixed.noise_covar.noise)


def _load_hyperparameters(model: SingleTaskGP, state: Mapping[str, Tensor]) -> None:
    """Copy raw hyperparameters of matching shape from ``state`` into ``model``."""
    own = model.state_dict()
    keep = {
        k: v.to(own[k].device, own[k].dtype)
        for k, v in state.items()
        if k in own and k.rsplit(".", 1)[-1].startswith("raw_") and own[k].shape == v.shape
    }
    model.load_state_dict(keep, strict=False)


def hyperparameters_of(model: SingleTaskGP) -> dict[str, list[float]]:
    """The fitted hyperparameters of a GP, as plain lists of floats (JSON-ready).

    Lengthscales are in normalised input units (the unit cube); output scale and noise
    variance are in standardised outcome units. BoTorch's default kernel has no output
    scale, which is then reported as ``[1.0]`` per output.

    Args:
        model: A model from :func:`fit_single_task_gp`.

    Returns:
        ``{"lengthscales", "outputscale", "noise", "mean_constant", "outcome_mean",
        "outcome_std"}``, each a flat list (outputs in order).
    """
    covar = model.covar_module
    base = getattr(covar, "base_kernel", covar)
    m = model.num_outputs
    if hasattr(covar, "outputscale"):
        outputscale = _floats(covar.outputscale)
    else:
        outputscale = [1.0] * m
    noise = model.likelihood.noise
    fixed = isinstance(model.likelihood, FixedNoiseGaussianLikelihood)
    out: dict[str, list[float]] = {
        "lengthscales": _floats(base.lengthscale),
        "outputscale": outputscale,
        # a fixed-noise model has one (known) variance per observation: report their mean
        "noise": _floats(noise.mean(dim=-1)) if fixed else _floats(noise),
        "mean_constant": _floats(model.mean_module.constant),
    }
    if fixed and getattr(model.likelihood, "second_noise_covar", None) is not None:
        out["extra_noise"] = _floats(model.likelihood.second_noise)
    tf = getattr(model, "outcome_transform", None)
    if isinstance(tf, Standardize):
        out["outcome_mean"] = _floats(tf.means)
        out["outcome_std"] = _floats(tf.stdvs)
    return out


def _floats(t: Tensor) -> list[float]:
    return [float(v) for v in t.detach().reshape(-1).cpu().tolist()]
