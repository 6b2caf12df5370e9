"""Hyperparameter fits on a log scale: the same GP and priors, far fewer L-BFGS-B evaluations.

BoTorch's default GP modules bound their positive hyperparameters (lengthscales, the noise
variance) with ``GreaterThan(lower, transform=None)``: the optimiser works on the values
themselves, with ``lower`` as an L-BFGS-B box bound. A lengthscale whose column matters little
drifts from about 1 to 10 or 100 in that linear coordinate in many small steps, and the fit
stops only when the relative change of the marginal likelihood falls below BoTorch's
tolerance; on a 20-column ARD kernel this took 130 to 1,050 evaluations for 10 to 200 rows.

:func:`log_scale` gives every such hyperparameter the coordinate ``log(value - lower)``
instead (GPyTorch's ``GreaterThan(lower, transform=exp)``). The model, its priors (they act
on the values, not the coordinate) and the bound are unchanged, so the maximum a posteriori
point is the same; only the path to it is shorter (for the 20-column RBF kernel: 22 to 111
evaluations for 10 to 200 rows, reaching an equal or better objective, on a synthetic problem
with 9 relevant columns; ``tests/surrogates/test_gp_fit.py`` checks fewer evaluations and an
equal or better objective on 12 columns, and ``docs/discovery.md`` gives the timings).

:class:`CholeskyMarginalLogLikelihood` makes each of those evaluations cheaper. GPyTorch's
exact marginal likelihood factors the ``n x n`` covariance by Cholesky (with BoTorch's
settings, at any size) and lets autograd differentiate through the factor,
which costs two triangular solves with ``n`` right-hand sides and several ``n x n``
temporaries. The gradient has a closed form (Rasmussen and Williams, "Gaussian Processes for
Machine Learning", 2006, eq. 5.9): ``d log p(y) / dK = (alpha alpha^T - K^-1) / 2`` with
``alpha = K^-1 (y - m)``, and ``K^-1`` comes from the factor at the price of one
``cholesky_inverse``. At ``n = 500`` that gradient takes 5 ms against 15 ms through autograd,
equal to 1e-14, and a whole evaluation of a Matern-5/2 GP's objective about half the time.
The value, the priors and the optimum are GPyTorch's; only the arithmetic of the gradient
differs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from gpytorch import settings
from gpytorch.constraints import GreaterThan
from gpytorch.distributions import MultivariateNormal
from gpytorch.mlls import ExactMarginalLogLikelihood
from linear_operator.utils.cholesky import psd_safe_cholesky  # type: ignore[import-untyped]
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["CholeskyMarginalLogLikelihood", "gaussian_log_density", "log_scale"]

_SUFFIX = "_constraint"


def log_scale(model: torch.nn.Module) -> int:
    """Put every lower-bounded, untransformed hyperparameter of ``model`` on a log scale.

    Each ``GreaterThan(lower)`` constraint without a transform (its raw value *is* the
    hyperparameter) is replaced by ``GreaterThan(lower, transform=exp)`` and the raw value
    rewritten so that the hyperparameter keeps its current value. Call it on a freshly built
    model, before the fit; other constraints are left as they are.

    Args:
        model: A GPyTorch model or likelihood (any module tree).

    Returns:
        How many hyperparameters were changed.
    """
    changed = 0
    module: Any
    for module in model.modules():
        constraints = getattr(module, "_constraints", None)
        if not constraints:
            continue
        for name, constraint in list(constraints.items()):
            if type(constraint) is not GreaterThan or constraint.enforced:
                continue
            param = name[: -len(_SUFFIX)]
            raw = getattr(module, param)
            lower = constraint.lower_bound.to(raw)
            with torch.no_grad():
                value = torch.maximum(raw.detach(), lower + 1e-6 * lower.abs().clamp_min(1e-9))
                module.register_constraint(
                    param,
                    GreaterThan(
                        float(constraint.lower_bound), transform=torch.exp, inv_transform=torch.log
                    ),
                )
                raw.copy_(torch.log(value - lower))
            changed += 1
    return changed


class _GaussianLogDensity(torch.autograd.Function):
    """``log N(diff; 0, covar)`` for ``... x n`` residuals, with the closed-form gradient."""

    @staticmethod
    def forward(ctx: Any, covar: Tensor, diff: Tensor) -> Tensor:
        chol = psd_safe_cholesky(covar)
        alpha = torch.cholesky_solve(diff.unsqueeze(-1), chol)
        inv_quad = (diff.unsqueeze(-1) * alpha).sum(dim=(-2, -1))
        logdet = 2.0 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        ctx.save_for_backward(chol, alpha)
        return -0.5 * (inv_quad + logdet + diff.shape[-1] * math.log(2 * math.pi))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor]:
        chol, alpha = ctx.saved_tensors
        g = grad[..., None, None]
        grad_covar = (alpha @ alpha.mT - torch.cholesky_inverse(chol)).mul_(0.5 * g)
        grad_diff = -(g * alpha).squeeze(-1)
        return grad_covar, grad_diff


def gaussian_log_density(covar: Tensor, diff: Tensor) -> Tensor:
    """The log density of zero-mean Gaussians at residuals ``diff`` (``... x n``) with dense
    covariances ``covar`` (``... x n x n``), differentiable once in both (the gradient in
    closed form; see the module docstring). The factor gets GPyTorch's jitter on failure."""
    return _GaussianLogDensity.apply(covar, diff)


class CholeskyMarginalLogLikelihood(ExactMarginalLogLikelihood):
    """GPyTorch's exact marginal log likelihood with the closed-form gradient.

    Where GPyTorch itself would factor the covariance by Cholesky (always with BoTorch's
    settings, which turn GPyTorch's fast ``log_prob`` off; otherwise up to
    ``settings.max_cholesky_size`` observations; no NaN masking) the marginal's log density
    is :func:`gaussian_log_density` of its dense covariance; elsewhere it is GPyTorch's. The
    value, the prior terms and the scaling by the number of observations are GPyTorch's, so
    BoTorch's ``fit_gpytorch_mll`` fits it as it fits the parent class. Differentiable
    once: use GPyTorch's class for Hessians.
    """

    def forward(self, function_dist: Any, target: Tensor, *params: Any, **kwargs: Any) -> Tensor:
        n = function_dist.event_shape.numel()
        # GPyTorch factors by Cholesky at any size with its fast log_prob off (BoTorch's
        # default, set on import), else up to max_cholesky_size (then it uses CG / Lanczos)
        cholesky = settings.fast_computations.log_prob.off() or (
            n <= settings.max_cholesky_size.value()
        )
        if (
            not cholesky
            or not isinstance(function_dist, MultivariateNormal)
            or settings.observation_nan_policy.value() != "ignore"
        ):
            return super().forward(function_dist, target, *params, **kwargs)
        output = self.likelihood(function_dist, *params, **kwargs)
        covar = output.lazy_covariance_matrix.to_dense()
        diff = (target - output.mean).expand(covar.shape[:-1])
        res = gaussian_log_density(covar, diff)
        res = self._add_other_terms(res, params)
        return res.div_(n)
