"""A multi-fidelity Gaussian process: one input column is the fidelity of the measurement.

BoTorch's ``SingleTaskMultiFidelityGP`` multiplies a Matérn kernel over the design inputs
by a linear truncated kernel over the fidelity (Wu, J., Toscano-Palmerin, S., Frazier, P. I.
and Wilson, A. G. (2019). Practical Multi-fidelity Bayesian Optimization for Hyperparameter
Tuning. UAI 35), so that measurements at a low fidelity inform the prediction at the target
fidelity, more so the closer the two fidelities are.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskMultiFidelityGP
from botorch.models.transforms import Normalize, Standardize
from torch import Tensor

from surrogates.gp_fit import CholeskyMarginalLogLikelihood

logger = logging.getLogger(__name__)

__all__ = ["fit_multi_fidelity_gp"]


def fit_multi_fidelity_gp(
    train_X: Tensor,  # noqa: N803 (BoTorch's names)
    train_Y: Tensor,  # noqa: N803
    fidelity_column: int,
    *,
    train_Yvar: Tensor | None = None,  # noqa: N803
    device: torch.device | str = "cpu",
    maxiter: int | None = None,
    warm_start_state: Mapping[str, Tensor] | None = None,
) -> SingleTaskMultiFidelityGP:
    """Fit a ``SingleTaskMultiFidelityGP`` to data in the unit cube.

    Args:
        train_X: ``n x d`` inputs in ``[0, 1]^d``; column ``fidelity_column`` is the
            fidelity (1 the most accurate when the kernel's truncation is to mean anything).
        train_Y: ``n x 1`` outputs.
        fidelity_column: Index of the fidelity column.
        train_Yvar: ``n x 1`` known noise variances, or ``None`` to infer the noise.
        device: Where to fit.
        maxiter: Iteration limit of the L-BFGS-B fit (BoTorch's default when ``None``).
        warm_start_state: A ``state_dict()`` of an earlier fit; its raw hyperparameters of
            matching shape start the optimisation.

    Returns:
        The fitted model, in eval mode.

    Raises:
        ValueError: If the shapes do not fit, there is no data, or the column is out of range.
    """
    if train_X.dim() != 2 or train_Y.shape != (train_X.shape[0], 1):
        raise ValueError(
            f"expected n x d inputs and n x 1 outputs, got {tuple(train_X.shape)} "
            f"and {tuple(train_Y.shape)}"
        )
    if train_X.shape[0] == 0:
        raise ValueError("cannot fit a GP to no data")
    d = train_X.shape[-1]
    if not 0 <= fidelity_column < d:
        raise ValueError(f"fidelity column {fidelity_column} is not one of the {d} inputs")
    dev = torch.device(device)
    x = train_X.to(dev, torch.double)
    y = train_Y.to(dev, torch.double)
    yvar = None if train_Yvar is None else train_Yvar.to(dev, torch.double).clamp_min(1e-12)
    bounds = torch.stack([torch.zeros(d), torch.ones(d)]).to(dev, torch.double)
    model = SingleTaskMultiFidelityGP(
        x,
        y,
        train_Yvar=yvar,
        data_fidelities=[fidelity_column],
        input_transform=Normalize(d=d, bounds=bounds),
        outcome_transform=Standardize(m=1),
    ).to(dev)
    if warm_start_state is not None:
        own = model.state_dict()
        keep = {
            k: v.to(own[k].device, own[k].dtype)
            for k, v in warm_start_state.items()
            if k in own and k.rsplit(".", 1)[-1].startswith("raw_") and own[k].shape == v.shape
        }
        model.load_state_dict(keep, strict=False)
    kwargs: dict[str, object] = {}
    if maxiter is not None:
        kwargs["optimizer_kwargs"] = {"options": {"maxiter": maxiter}}
    fit_gpytorch_mll(CholeskyMarginalLogLikelihood(model.likelihood, model), **kwargs)  # type: ignore[arg-type]
    model.eval()
    logger.debug("fitted multi-fidelity GP on %d points (d=%d)", x.shape[0], d)
    return model
