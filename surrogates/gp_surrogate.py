"""A Gaussian-process surrogate of a material property (BoTorch ``SingleTaskGP``).

An exact GP with BoTorch's default Matern-5/2 ARD kernel and dimension-scaled lengthscale
prior (Hvarfner et al., ICML 2024), fitted by maximising the marginal likelihood (Rasmussen &
Williams, *Gaussian Processes for Machine Learning*, 2006, ch. 5). Descriptor columns that are
constant in the training data are dropped by a BoTorch ``FilterFeatures`` input transform
(they carry no information and would break the unit-cube normalisation); the rest are
normalised to the unit cube and the targets standardised inside the model, so
:meth:`GPSurrogate.as_botorch_model` takes full feature rows in the descriptor's units.

``predict`` returns the posterior of a new *measurement* (latent variance plus the fitted
noise) when ``include_noise`` (default), which is what calibration is judged against; the
BoTorch model's ``posterior(X)`` is the latent function's, as acquisition functions expect,
and ``posterior(X, observation_noise=True)`` equals ``predict``.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.model import Model
from botorch.models.transforms import Normalize, Standardize
from botorch.models.transforms.input import ChainedInputTransform, FilterFeatures
from numpy.typing import NDArray
from pydantic import Field

from surrogates.base import Surrogate, SurrogateOptions, register_surrogate
from surrogates.gp import default_device
from surrogates.gp_fit import CholeskyMarginalLogLikelihood, log_scale

logger = logging.getLogger(__name__)

__all__ = ["GPSurrogate"]


@register_surrogate("gp")
class GPSurrogate(Surrogate):
    """Exact GP on feature rows (BoTorch ``SingleTaskGP``).

    Options:
        include_noise: ``predict`` includes the fitted observation noise in its std.
        maxiter: L-BFGS-B iteration limit of the marginal-likelihood fit (None: BoTorch's).
        max_train: Fit on at most this many points (a seeded random subset; exact GPs cost
            ``O(n^3)``). None: all.
        device: ``"cpu"``, ``"cuda"``, ... (None: CUDA when present).
    """

    class Options(SurrogateOptions):
        include_noise: bool = True
        maxiter: int | None = Field(None, ge=1)
        max_train: int | None = Field(None, ge=2)
        device: str | None = None

    options: Options

    def _fit(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> None:
        o = self.options
        if o.max_train is not None and x.shape[0] > o.max_train:
            keep = np.random.default_rng(o.seed).choice(x.shape[0], o.max_train, replace=False)
            x, y = x[keep], y[keep]
        dev = torch.device(o.device) if o.device is not None else default_device()
        tx = torch.as_tensor(x, dtype=torch.double, device=dev)
        ty = torch.as_tensor(y, dtype=torch.double, device=dev).unsqueeze(-1)
        varying = torch.nonzero(tx.amax(0) - tx.amin(0) > 1e-12).reshape(-1)
        if varying.numel() == 0:
            varying = torch.arange(tx.shape[1], device=dev)
        transform = ChainedInputTransform(
            select=FilterFeatures(feature_indices=varying),
            normalize=Normalize(d=int(varying.numel())),
        )
        torch.manual_seed(o.seed)
        model = SingleTaskGP(
            tx, ty, input_transform=transform, outcome_transform=Standardize(m=1)
        ).to(dev)
        log_scale(model)  # the same model, a shorter fit: see surrogates/gp_fit.py
        mll = CholeskyMarginalLogLikelihood(model.likelihood, model)
        kwargs: dict[str, object] = {}
        if o.maxiter is not None:
            kwargs["optimizer_kwargs"] = {"options": {"maxiter": o.maxiter}}
        fit_gpytorch_mll(mll, **kwargs)  # type: ignore[arg-type]
        model.eval()
        self._model = model
        self._device = dev

    def _predict(self, x: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        means, stds = [], []
        with torch.no_grad():
            for start in range(0, x.shape[0], 2048):
                tx = torch.as_tensor(
                    x[start : start + 2048], dtype=torch.double, device=self._device
                )
                post = self._model.posterior(tx, observation_noise=self.options.include_noise)
                means.append(post.mean.reshape(-1).cpu().numpy())
                stds.append(post.variance.reshape(-1).clamp_min(1e-18).sqrt().cpu().numpy())
        return np.concatenate(means), np.concatenate(stds)

    def as_botorch_model(self) -> Model:
        """The fitted ``SingleTaskGP`` (takes full feature rows, double precision)."""
        if self.n_features is None:
            raise RuntimeError("surrogate 'gp' is not fitted")
        return self._model
