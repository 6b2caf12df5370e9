"""Gaussian-process surrogates (exact GPs via BoTorch and GPyTorch).

:func:`fit_single_task_gp` fits BoTorch's ``SingleTaskGP`` by maximising the marginal
log likelihood (Rasmussen & Williams, *Gaussian Processes for Machine Learning*, 2006,
ch. 5) plus the log prior of the hyperparameters (a MAP fit). Two sets of priors
(``priors``):

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

Inputs are normalised to the unit cube and outcomes standardised inside the model, so
callers pass and receive values in their own units.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Literal

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

from surrogates.gp_fit import log_scale

logger = logging.getLogger(__name__)

GPPriors = Literal["botorch", "gamma"]
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
]


def default_device() -> torch.device:
    """CUDA when PyTorch sees a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def gamma_prior_modules(
    d: int, *, infer_noise: bool, batch_shape: torch.Size | None = None
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
    lengthscale_prior = GammaPrior(3.0, 2.0 / ls_mode)
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
    if priors not in ("botorch", "gamma"):
        raise ValueError(f"priors must be 'botorch' or 'gamma', got {priors!r}")
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
    d, m = x.shape[-1], y.shape[-1]
    normalize = Normalize(d=d, bounds=None if bounds is None else bounds.to(dev, torch.double))
    yvar = None if train_Yvar is None else train_Yvar.to(dev, torch.double).clamp_min(1e-12)
    modules: dict[str, object] = {}
    if priors == "gamma":
        batch = torch.Size([m]) if m > 1 else torch.Size()
        kernel, likelihood = gamma_prior_modules(d, infer_noise=yvar is None, batch_shape=batch)
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
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
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


def _reported_plus_inferred_noise(model: SingleTaskGP, priors: GPPriors) -> Likelihood:
    """A fixed-noise likelihood of ``model``'s (standardised) reported variances plus one
    learned variance, whose prior and lower bound are those of an inferred noise."""
    fixed = model.likelihood
    assert isinstance(fixed, FixedNoiseGaussianLikelihood)
    prior: Prior
    if priors == "gamma":
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
