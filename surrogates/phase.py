"""A multi-class Gaussian-process classifier of phase labels (Dirichlet-based GP).

Phase mapping labels each measured point with a phase index ``0 .. K-1``.
:class:`PhaseClassifier` learns those labels with the Dirichlet-based GP classifier of
Milios, Camoriano, Michiardi, Rosasco and Filippone ("Dirichlet-based Gaussian Processes
for Large-scale Calibrated Classification", NeurIPS 2018), as GPyTorch implements it
(``DirichletClassificationLikelihood``, whose label transform is repeated here so that
classes not yet observed still get a latent function): each label becomes a Dirichlet
pseudo-count, whose log-Gamma moment matching turns classification into ``K`` exact GP
regressions with heteroskedastic (known) noise. Fitting is exact-GP hyperparameter
learning (no variational approximation), so it is fast and deterministic; the class
probabilities are the expectation of ``softmax(f)`` over the ``K`` independent latent
posteriors, estimated with a fixed set of Monte-Carlo draws so predictions are
reproducible.

:func:`fit_phase_classifier` fits it; :meth:`PhaseClassifier.predict` gives the class
probabilities, the latent standard deviations (the model's own uncertainty) and the
Monte-Carlo probability draws that the ``boundary`` planner turns into acquisition scores;
:meth:`PhaseClassifier.predict_labels` maps a whole grid, for scoring a map against the
truth. Inputs are the planners' model encoding (the unit cube).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import gpytorch
import torch
from gpytorch.distributions import MultivariateNormal
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.likelihoods import FixedNoiseGaussianLikelihood
from gpytorch.means import ConstantMean
from gpytorch.models import ExactGP
from gpytorch.priors import LogNormalPrior
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["PhaseClassifier", "PhasePrediction", "dirichlet_targets", "fit_phase_classifier"]

_PREDICT_CHUNK = 256
"""Test points per posterior evaluation (bounds the memory of a dense-grid prediction)."""


@dataclass(frozen=True)
class PhasePrediction:
    """What the classifier says about ``n`` points.

    Attributes:
        probabilities: ``n x K`` class probabilities (rows sum to one).
        latent_std: ``n x K`` posterior standard deviations of the latent functions,
            relative to each class's prior standard deviation (1 far from any data, near 0
            where the data pin the latent down).
        samples: ``s x n x K`` Monte-Carlo draws of ``softmax(f)``, whose mean is
            ``probabilities``.
    """

    probabilities: Tensor
    latent_std: Tensor
    samples: Tensor

    @property
    def labels(self) -> Tensor:
        """``n`` most probable class indices."""
        return self.probabilities.argmax(dim=-1)


class PhaseClassifier(ExactGP):
    """``K`` independent exact GPs (one batch) on Dirichlet-transformed labels.

    Build it with :func:`fit_phase_classifier`.

    Args:
        train_X: ``n x d`` inputs in the unit cube.
        targets: ``K x n`` Dirichlet-transformed labels (see :func:`dirichlet_targets`).
        likelihood: The fixed-noise likelihood holding the labels' variances.
        num_classes: ``K``.
    """

    def __init__(
        self,
        train_X: Tensor,  # noqa: N803 (BoTorch's names)
        targets: Tensor,
        likelihood: FixedNoiseGaussianLikelihood,
        num_classes: int,
    ) -> None:
        super().__init__(train_X, targets, likelihood)
        d = train_X.shape[-1]
        batch = torch.Size((num_classes,))
        self.num_classes = num_classes
        self.mean_module = ConstantMean(batch_shape=batch)
        self.covar_module = ScaleKernel(
            MaternKernel(
                nu=2.5,
                ard_num_dims=d,
                batch_shape=batch,
                lengthscale_prior=LogNormalPrior(math.log(0.2) + math.log(d) / 2, 0.75),
            ),
            batch_shape=batch,
        )

    def forward(self, x: Tensor) -> MultivariateNormal:
        """The latent GPs' prior at ``x`` (batch ``K``)."""
        return MultivariateNormal(self.mean_module(x), self.covar_module(x))

    def lengthscales(self) -> Tensor:
        """``K x d`` lengthscales (unit-cube units)."""
        return self.covar_module.base_kernel.lengthscale.detach().reshape(self.num_classes, -1)

    def summary(self) -> dict[str, list[float]]:
        """Hyperparameters as plain lists (JSON-ready): per class ``lengthscales`` (flat,
        class-major), ``outputscale``, ``mean_constant`` and the learned ``extra_noise``."""
        lik = self.likelihood
        extra = getattr(lik, "second_noise", None)
        return {
            "lengthscales": [float(v) for v in self.lengthscales().reshape(-1).tolist()],
            "outputscale": [float(v) for v in self.covar_module.outputscale.detach().tolist()],
            "mean_constant": [
                float(v) for v in self.mean_module.constant.detach().reshape(-1).tolist()
            ],
            "extra_noise": [] if extra is None else [float(v) for v in extra.detach().reshape(-1)],
        }

    def predict(self, x: Tensor, *, num_samples: int = 128, seed: int = 0) -> PhasePrediction:
        """Class probabilities and model uncertainty at ``x``.

        Args:
            x: ``n x d`` inputs in the unit cube.
            num_samples: Monte-Carlo draws of the latent functions.
            seed: Seed of those draws (the same seed gives the same probabilities).

        Returns:
            The prediction (tensors on ``x``'s device).
        """
        if x.dim() != 2 or x.shape[-1] != self.train_inputs[0].shape[-1]:
            raise ValueError(f"expected n x d inputs, got shape {tuple(x.shape)}")
        x = x.to(self.train_inputs[0])
        gen = torch.Generator(device="cpu").manual_seed(seed)
        prior_sd = self.covar_module.outputscale.detach().sqrt().unsqueeze(-1)  # K x 1
        probs, sds, draws = [], [], []
        self.eval()
        with torch.no_grad(), gpytorch.settings.fast_pred_var():
            for start in range(0, x.shape[0], _PREDICT_CHUNK):
                chunk = x[start : start + _PREDICT_CHUNK]
                post = self(chunk)  # batch K, n_chunk
                mean, var = post.mean, post.variance.clamp_min(1e-12)  # K x n
                eps = torch.randn(num_samples, *mean.shape, generator=gen, dtype=mean.dtype)
                f = mean + var.sqrt() * eps.to(mean.device)  # s x K x n
                p = torch.softmax(f, dim=-2).transpose(-1, -2)  # s x n x K
                draws.append(p)
                probs.append(p.mean(dim=0))
                sds.append((var.sqrt() / prior_sd).transpose(0, 1))
        return PhasePrediction(
            probabilities=torch.cat(probs), latent_std=torch.cat(sds), samples=torch.cat(draws, 1)
        )

    def predict_labels(self, x: Tensor) -> Tensor:
        """Most probable class at each of ``n`` points (``n x d``, unit cube): ``n`` ints.

        Uses the latent posterior means (``argmax_k mu_k(x)``): the mode of the predicted
        class distribution without Monte-Carlo noise, cheap enough for dense grids.
        """
        if x.dim() != 2 or x.shape[-1] != self.train_inputs[0].shape[-1]:
            raise ValueError(f"expected n x d inputs, got shape {tuple(x.shape)}")
        x = x.to(self.train_inputs[0])
        out = []
        self.eval()
        with torch.no_grad(), gpytorch.settings.skip_posterior_variances():
            for start in range(0, x.shape[0], _PREDICT_CHUNK):
                out.append(self(x[start : start + _PREDICT_CHUNK]).mean.argmax(dim=0))
        return torch.cat(out)


def dirichlet_targets(
    labels: Tensor, num_classes: int, alpha_epsilon: float
) -> tuple[Tensor, Tensor]:
    """Milios et al.'s regression targets and noise variances for integer labels.

    Each label ``c`` becomes Dirichlet pseudo-counts ``alpha_k = alpha_epsilon + [k == c]``;
    moment matching of the Gamma marginals by log-normals gives the noise variance
    ``sigma2_k = log(1 / alpha_k + 1)`` and the target ``log(alpha_k) - sigma2_k / 2``.

    Args:
        labels: ``n`` class indices (long).
        num_classes: ``K``.
        alpha_epsilon: Pseudo-count of the classes a point was not labelled with.

    Returns:
        ``(targets, noise)``: two ``K x n`` double tensors.
    """
    n = labels.shape[0]
    alpha = torch.full((n, num_classes), alpha_epsilon, dtype=torch.double, device=labels.device)
    alpha[torch.arange(n, device=labels.device), labels] += 1.0
    sigma2 = torch.log(alpha.reciprocal() + 1.0)
    targets = alpha.log() - 0.5 * sigma2
    return targets.T.contiguous(), sigma2.T.contiguous()


def fit_phase_classifier(
    train_X: Tensor,  # noqa: N803 (BoTorch's names)
    labels: Tensor,
    num_classes: int,
    *,
    alpha_epsilon: float = 0.01,
    iterations: int = 60,
    lr: float = 0.1,
) -> PhaseClassifier:
    """Fit the Dirichlet GP classifier to labelled points.

    Args:
        train_X: ``n x d`` inputs in the unit cube.
        labels: ``n`` integer class indices in ``0 .. num_classes - 1``.
        num_classes: ``K`` (classes never observed get only the prior pseudo-count).
        alpha_epsilon: Dirichlet pseudo-count of the classes a point was *not* labelled with
            (Milios et al.'s ``alpha_epsilon``): larger trusts each label less.
        iterations: Adam steps on the exact marginal log likelihood.
        lr: Adam learning rate.

    Returns:
        The fitted classifier, in eval mode, double precision, on ``train_X``'s device.

    Raises:
        ValueError: If the shapes disagree, there is no data, ``num_classes < 2`` or a
            label is out of range.
    """
    if train_X.dim() != 2 or labels.shape != (train_X.shape[0],) or train_X.shape[0] == 0:
        raise ValueError(
            f"expected n x d inputs and n labels, got {tuple(train_X.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    y = labels.to(device=train_X.device, dtype=torch.long)
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {y.unique().tolist()}")
    x = train_X.to(torch.double)
    targets, noise = dirichlet_targets(y, num_classes, alpha_epsilon)
    likelihood = FixedNoiseGaussianLikelihood(
        noise=noise, learn_additional_noise=True, batch_shape=torch.Size((num_classes,))
    ).to(x)
    model = PhaseClassifier(x, targets, likelihood, num_classes).to(x)
    model.mean_module.constant.data.copy_(targets.mean(dim=-1))
    model.train()
    likelihood.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(iterations):
        optimizer.zero_grad()
        loss = -mll(model(x), targets).sum()
        loss.backward()
        optimizer.step()
    model.eval()
    likelihood.eval()
    logger.debug("phase classifier fitted on %d points, %d classes", x.shape[0], num_classes)
    return model
