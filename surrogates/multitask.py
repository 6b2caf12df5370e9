"""A multi-task GP: one campaign's data modelled jointly with related campaigns' data.

Transfer between campaigns (a problem and a shifted, rescaled variant of it; the same
synthesis on another furnace) follows multi-task Bayesian optimisation (Swersky, Snoek and
Adams, "Multi-Task Bayesian Optimization", NeurIPS 2013): an intrinsic coregionalisation
model (Bonilla, Chai and Williams, "Multi-task Gaussian Process Prediction", NeurIPS 2007)
``k((x, i), (x', j)) = B[i, j] k(x, x')`` in BoTorch's ``MultiTaskGP``, whose task covariance
``B`` is fitted with the kernel, so a related task helps exactly as much as the data say it
is correlated with the target. Each related task's outcomes are first standardised on their
own and given the target's mean and spread, so a shifted or rescaled task costs the model
nothing; the model then standardises the union as usual and predicts in the target's units.

The returned model predicts the target task only (``output_tasks=[0]``) from ``n x d`` inputs
without a task column, so an acquisition function uses it as it would a ``SingleTaskGP``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import MultiTaskGP
from botorch.models.transforms import Normalize
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from gpytorch.kernels import ScaleKernel
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

from surrogates.gp import default_device

logger = logging.getLogger(__name__)

__all__ = ["fit_multitask_gp", "task_correlations"]


def _in_units_of(y: Tensor, target: Tensor) -> Tensor:
    """``y`` standardised on its own, then given ``target``'s mean and spread."""

    def spread(v: Tensor) -> Tensor:
        return (v.std() if v.shape[0] > 1 else torch.ones((), dtype=v.dtype)).clamp_min(1e-9)

    return (y - y.mean()) / spread(y) * spread(target) + target.mean()


def fit_multitask_gp(
    target_X: Tensor,  # noqa: N803 (BoTorch's names)
    target_Y: Tensor,  # noqa: N803
    related: Sequence[tuple[Tensor, Tensor]],
    *,
    bounds: Tensor | None = None,
    device: torch.device | str | None = None,
) -> MultiTaskGP:
    """Fit a GP of the target task jointly with related tasks.

    Args:
        target_X: ``n x d`` inputs of the target task (this campaign).
        target_Y: ``n x 1`` outcomes of the target task.
        related: For each related task, its ``n_i x d`` inputs and ``n_i x 1`` outcomes.
        bounds: ``2 x d`` input bounds for the normalisation (the search space's box).
        device: Where to fit (:func:`surrogates.gp.default_device` when omitted).

    Returns:
        The model, in eval mode; its posterior is the target task's (one output) in the
        target's own units.

    Raises:
        ValueError: If shapes do not fit, an outcome is not a single column, or there is no
            related data.
    """
    if not related:
        raise ValueError("a multi-task GP needs at least one related task")
    dev = torch.device(device) if device is not None else default_device()
    if target_Y.dim() != 2 or target_Y.shape[-1] != 1:
        raise ValueError(f"expected n x 1 target outcomes, got {tuple(target_Y.shape)}")
    d = target_X.shape[-1]
    target = target_Y.to(dev, torch.double)
    xs, ys = [], []
    for task, (x, y) in enumerate([(target_X, target_Y), *related]):
        if x.dim() != 2 or x.shape[-1] != d or y.shape != (x.shape[0], 1):
            raise ValueError(f"task {task}: inputs n x {d} and outcomes n x 1 expected")
        x = x.to(dev, torch.double)
        xs.append(torch.cat([x, torch.full_like(x[:, :1], float(task))], dim=-1))
        y = y.to(dev, torch.double)
        ys.append(y if task == 0 else _in_units_of(y, target))
    box = None
    if bounds is not None:
        b = bounds.to(dev, torch.double)
        box = torch.cat([b, torch.tensor([[0.0], [1.0]], dtype=torch.double, device=dev)], -1)
    # An output scale on the data kernel: BoTorch's task kernel fixes the target task's
    # variance at 1, which with a long lengthscale (a smooth bowl) flattens the target's
    # prediction to a fraction of what the related task shows.
    data_kernel = ScaleKernel(
        get_covar_module_with_dim_scaled_prior(ard_num_dims=d, active_dims=list(range(d)))
    )
    model = MultiTaskGP(
        torch.cat(xs),
        torch.cat(ys),
        task_feature=d,
        output_tasks=[0],
        covar_module=data_kernel,
        input_transform=Normalize(d=d + 1, indices=list(range(d)), bounds=box),
    ).to(dev)
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    model.eval()
    logger.debug(
        "fitted a multi-task GP: %d target points, %d related tasks", len(ys[0]), len(related)
    )
    return model


def task_correlations(model: MultiTaskGP) -> list[float]:
    """The fitted correlation of each related task with the target (task 0), in task order."""
    index = model.covar_module.kernels[1]
    cov = index.covar_matrix.to_dense().detach()
    var = torch.diagonal(cov)
    return [float(cov[0, j] / torch.sqrt(var[0] * var[j])) for j in range(1, cov.shape[0])]
