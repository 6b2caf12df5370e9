"""A Gaussian-process classifier of experiment success (unknown feasibility constraints).

Experiments fail: a synthesis gives no product, a film cracks, a solution precipitates.
:class:`FeasibilityClassifier` learns where from the succeeded/failed labels of every
experiment so far, with a latent GP ``f`` and a Bernoulli likelihood ``P(success | x) =
Phi(f(x))`` (Rasmussen & Williams, *Gaussian Processes for Machine Learning*, 2006, ch. 3),
fitted by variational inference (Hensman, Matthews and Ghahramani, "Scalable Variational
Gaussian Process Classification", AISTATS 2015) with GPyTorch. The predictive probability
integrates over the latent's uncertainty, ``Phi(mu / sqrt(1 + sigma^2))``, so it stays near
one half far from any data and approaches zero or one only where the labels agree.

This is the classifier of Anubis (Hickman et al., "Anubis: Bayesian optimization with
unknown feasibility constraints for scientific experimentation", Digital Discovery 2025);
planners multiply their acquisition by ``P(success)`` (add its log, for the LogEI family).
"""

from __future__ import annotations

import logging
import math

import gpytorch
import torch
from gpytorch.distributions import MultivariateNormal
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.likelihoods import BernoulliLikelihood
from gpytorch.means import ConstantMean
from gpytorch.models import ApproximateGP
from gpytorch.priors import GammaPrior, LogNormalPrior
from gpytorch.variational import CholeskyVariationalDistribution, VariationalStrategy
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["FeasibilityClassifier", "fit_feasibility_classifier"]


class FeasibilityClassifier(ApproximateGP):
    """Variational GP classifier on inputs in the unit cube.

    Args:
        inducing_points: ``m x d`` inputs the variational posterior is anchored at (the
            training inputs, or a subset of them).
    """

    def __init__(self, inducing_points: Tensor) -> None:
        distribution = CholeskyVariationalDistribution(inducing_points.shape[0])
        strategy = VariationalStrategy(
            self, inducing_points, distribution, learn_inducing_locations=False
        )
        super().__init__(strategy)
        d = inducing_points.shape[-1]
        self.mean_module = ConstantMean()
        self.covar_module = ScaleKernel(
            MaternKernel(
                nu=2.5,
                ard_num_dims=d,
                lengthscale_prior=LogNormalPrior(math.sqrt(2) + math.log(d) / 2, math.sqrt(3)),
            ),
            outputscale_prior=GammaPrior(2.0, 0.5),
        )
        self.likelihood = BernoulliLikelihood()

    def forward(self, x: Tensor) -> MultivariateNormal:
        """The latent GP's prior at ``x`` (``... x n x d``)."""
        return MultivariateNormal(self.mean_module(x), self.covar_module(x))

    def probit(self, x: Tensor) -> Tensor:
        """``z = mu / sqrt(1 + sigma^2)`` of the latent at ``... x d`` points (shape ``...``);
        ``P(success) = Phi(z)``."""
        flat = x.reshape(-1, x.shape[-1])
        latent = self(flat)
        z = latent.mean / torch.sqrt(1.0 + latent.variance)
        return z.reshape(x.shape[:-1])

    def probability(self, x: Tensor) -> Tensor:
        """``P(success)`` at ``x`` (``... x d`` inputs in the unit cube), differentiable.

        Returns:
            A tensor of shape ``...`` with values in ``[0, 1]``.
        """
        return torch.special.ndtr(self.probit(x))

    def log_probability(self, x: Tensor) -> Tensor:
        """``log P(success)`` at ``x`` (numerically safe far into the failed region)."""
        return torch.special.log_ndtr(self.probit(x))


def fit_feasibility_classifier(
    train_X: Tensor,  # noqa: N803 (BoTorch's names)
    succeeded: Tensor,
    *,
    iterations: int = 100,
    lr: float = 0.1,
) -> FeasibilityClassifier:
    """Fit the classifier to labelled experiments.

    Args:
        train_X: ``n x d`` inputs in the unit cube (the planners' model encoding).
        succeeded: ``n`` labels, ``1`` for success and ``0`` for failure.
        iterations: Adam steps on the variational ELBO.
        lr: Adam learning rate.

    Returns:
        The fitted classifier, in eval mode.

    Raises:
        ValueError: If the shapes disagree or there is no data.
    """
    if train_X.dim() != 2 or succeeded.shape != (train_X.shape[0],) or train_X.shape[0] == 0:
        raise ValueError(
            f"expected n x d inputs and n labels, got {tuple(train_X.shape)} and "
            f"{tuple(succeeded.shape)}"
        )
    x = train_X.to(torch.double)
    y = succeeded.to(x)
    model = FeasibilityClassifier(x.clone()).to(x)
    model.train()
    mll = gpytorch.mlls.VariationalELBO(model.likelihood, model, num_data=y.numel())
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(iterations):
        optimizer.zero_grad()
        loss = -mll(model(x), y)
        loss.backward()
        optimizer.step()
    model.eval()
    logger.debug(
        "feasibility classifier fitted on %d points (%d failed)", y.numel(), int((y == 0).sum())
    )
    return model
