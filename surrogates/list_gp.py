"""An exact GP that scores long candidate lists: ``list_gp``.

A Gaussian process (Rasmussen & Williams, *Gaussian Processes for Machine Learning*, 2006,
ch. 2 and 5) is the smooth surrogate a list screen needs when the best candidates lie beyond
the best value measured: unlike a forest, whose prediction never leaves the range of its
training targets, a GP extrapolates the trend. Its cost over a list of ``m`` candidates and
``n`` observations is what this module keeps down:

* **Hyperparameters** are those of BoTorch's ``SingleTaskGP`` (its default kernel with the
  dimension-scaled lengthscale prior of Hvarfner et al., ICML 2024, the targets
  standardised), fitted by maximising the marginal likelihood on at most ``max_fit`` rows (a
  seeded random subset beyond that), so the fit stops growing with ``n``.
* **Conditioning** on all ``n`` rows is one Cholesky factor (``O(n^3)``, 10 ms at 1,000).
* **The mean** over the list is one kernel product, ``O(m n d)``.
* **The standard deviation** exactly costs ``O(m n^2)`` (a triangular solve per candidate),
  which at 50,000 candidates and 1,000 observations is 5e10 operations. So the list gets an
  *upper bound* instead: the posterior variance given a subset ``S`` of the observations is
  never below the variance given all of them (conditioning on more data cannot raise a
  Gaussian's variance), and with ``S`` the ``bound_points`` observations of best target (the
  region a screen proposes from) it costs ``O(m |S|^2)``. Expected improvement and UCB grow
  with the standard deviation, so a caller ranks candidates by the bound and computes the
  exact value (:meth:`ListGPSurrogate.exact_std`) only for those whose bound could still win
  (the ``screening`` planner does: its picks are those of the exact posterior).

``predict`` returns the latent function's exact mean and standard deviation (without the
observation noise), as acquisition functions use them.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Literal

import numpy as np
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.model import Model
from botorch.models.transforms import Standardize
from gpytorch.kernels import MaternKernel, RBFKernel, ScaleKernel
from numpy.typing import NDArray
from pydantic import Field
from torch import Tensor

from surrogates.base import Surrogate, SurrogateOptions, register_surrogate
from surrogates.gp import gamma_prior_modules
from surrogates.gp_fit import CholeskyMarginalLogLikelihood, log_scale
from surrogates.threads import torch_threads

logger = logging.getLogger(__name__)

__all__ = ["ListGPSurrogate"]

_CHUNK = 4096


@register_surrogate("list_gp")
class ListGPSurrogate(Surrogate):
    """Exact GP with a cheap upper bound of its standard deviation (see the module docstring).

    Feature rows are used as given (standardise or project them beforehand, as the
    ``screening`` planner does); the targets are standardised inside.

    Options:
        max_fit: The hyperparameters are fitted on at most this many rows (a seeded random
            subset beyond that); the posterior always conditions on every row.
        bound_points: Size of the subset whose posterior bounds the standard deviation.
        maxiter: L-BFGS-B iteration limit of the marginal-likelihood fit (None: BoTorch's).
        kernel: ``"rbf"``: BoTorch's default (RBF ARD, dimension-scaled LogNormal
            lengthscale prior); ``"matern_gamma"``: Matern-5/2 ARD with the Gamma priors of
            the ``bo`` planner's ``gp_priors = "gamma"`` (BayBE's; see :mod:`surrogates.gp`).
    """

    class Options(SurrogateOptions):
        max_fit: int = Field(200, ge=2)
        bound_points: int = Field(128, ge=1)
        maxiter: int | None = Field(None, ge=1)
        kernel: Literal["rbf", "matern_gamma"] = "rbf"

    options: Options

    def _fit(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> None:
        o = self.options
        n = x.shape[0]
        fit_rows = np.arange(n)
        if n > o.max_fit:
            fit_rows = np.sort(np.random.default_rng(o.seed).choice(n, o.max_fit, replace=False))
        tx = torch.as_tensor(x, dtype=torch.double)
        ty = torch.as_tensor(y, dtype=torch.double).unsqueeze(-1)
        torch.manual_seed(o.seed)
        model = SingleTaskGP(
            tx[fit_rows], ty[fit_rows], outcome_transform=Standardize(m=1), **self._modules(x)
        )
        log_scale(model)
        mll = CholeskyMarginalLogLikelihood(model.likelihood, model)
        kwargs: dict[str, object] = {}
        if o.maxiter is not None:
            kwargs["optimizer_kwargs"] = {"options": {"maxiter": o.maxiter}}
        with torch_threads(1):  # small operations: see surrogates/threads.py
            fit_gpytorch_mll(mll, **kwargs)  # type: ignore[arg-type]
        model.eval()
        ot: Any = model.outcome_transform
        self._y_mean = float(ot.means.reshape(-1)[0])
        self._y_std = float(ot.stdvs.reshape(-1)[0])
        self._kernel = model.covar_module
        self._const = float(model.mean_module(tx[:1]).reshape(-1)[0].detach())
        self._noise = float(model.likelihood.noise.reshape(-1)[0].detach())
        self._model = model
        self._condition(x, y)

    def _modules(self, x: NDArray[np.float64]) -> dict[str, Any]:
        """The kernel and likelihood of ``options.kernel`` (empty: BoTorch's defaults)."""
        if self.options.kernel == "rbf":
            return {}
        kernel, likelihood = gamma_prior_modules(x.shape[1], infer_noise=True)
        return {"covar_module": kernel, "likelihood": likelihood}

    def conditioned(self, X: NDArray[np.float64], y: NDArray[np.float64]) -> ListGPSurrogate:  # noqa: N803
        """A copy with this GP's hyperparameters, conditioned on other rows (cost ``O(n^3)``).

        Args:
            X: ``n x d`` feature rows (the same ``d``).
            y: ``n`` targets.

        Returns:
            The new surrogate; the targets keep this fit's standardisation.

        Raises:
            RuntimeError: If this surrogate is not fitted.
            ValueError: If the shapes do not fit.
        """
        x = self.featurize(X)
        self._check(x)
        t = np.asarray(y, dtype=np.float64).reshape(-1)
        if t.shape[0] != x.shape[0] or not np.all(np.isfinite(t)):
            raise ValueError("conditioned: y must hold one finite target per row")
        other = copy.copy(self)
        other._condition(x, t)
        return other

    def _condition(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> None:
        n = x.shape[0]
        tx = torch.as_tensor(x, dtype=torch.double)
        ty = torch.as_tensor(y, dtype=torch.double)
        self._x = tx
        self._x_scaled: tuple[Tensor, Tensor, Tensor] | None = None
        z = (ty - self._y_mean) / self._y_std - self._const
        with torch.no_grad():
            self._chol = self._factor(tx)
            self._alpha = torch.cholesky_solve(z.unsqueeze(-1), self._chol).reshape(-1)
            best = np.argsort(-y, kind="stable")[: min(n, self.options.bound_points)]
            self._bound_rows = torch.as_tensor(best)
            self._bound_chol = self._factor(tx[self._bound_rows])

    def _factor(self, x: Tensor) -> Tensor:
        """Cholesky factor of ``k(x, x) + noise I`` (jitter added if it is not positive)."""
        k = self._kernel(x).to_dense()
        eye = torch.eye(x.shape[0], dtype=k.dtype)
        jitter = 0.0
        for _ in range(6):
            chol, info = torch.linalg.cholesky_ex(k + (self._noise + jitter) * eye)
            if int(info) == 0:
                return chol
            jitter = max(1e-8, jitter * 10)
        raise RuntimeError("list_gp: the kernel matrix is not positive definite")

    def _prior_var(self, x: Tensor) -> Tensor:
        """``k(x, x)``: one number for the stationary kernels BoTorch uses, else per row."""
        if isinstance(self._kernel, (RBFKernel, ScaleKernel, MaternKernel)):
            return self._kernel(x[:1], diag=True).reshape(-1).to(torch.double).expand(x.shape[0])
        return self._kernel(x, diag=True).reshape(-1).to(torch.double)

    def _cross(self, c: Tensor) -> Tensor:
        """``k(c, X)`` (``len(c) x n``).

        For the RBF and Matern kernels (bare or in a ``ScaleKernel``) the squared scaled
        distances come from one matrix product and the kernel is applied in place, which is
        about twice as fast over a long list as the kernel module's own path; other kernels
        use that path.
        """
        kernel, scale = self._kernel, 1.0
        if isinstance(kernel, ScaleKernel):
            scale = float(kernel.outputscale.reshape(-1)[0])
            kernel = kernel.base_kernel
        nu = getattr(kernel, "nu", None) if isinstance(kernel, MaternKernel) else None
        if not isinstance(kernel, RBFKernel) and nu not in (0.5, 1.5, 2.5):
            return self._kernel(c, self._x).to_dense()
        if self._x_scaled is None:
            ls = kernel.lengthscale.reshape(1, -1).to(torch.double)
            xs = self._x / ls
            self._x_scaled = (ls, xs, xs.square().sum(1).unsqueeze(0))
        ls, xs, xs_sq = self._x_scaled
        cs = c / ls
        d2 = torch.addmm(xs_sq, cs, xs.T, alpha=-2.0).add_(cs.square().sum(1, keepdim=True))
        d2.clamp_min_(0.0)
        if nu is None:
            k = d2.mul_(-0.5).exp_()
        else:
            r = d2.sqrt_().mul_(math.sqrt(2.0 * nu))  # sqrt(2 nu) * distance
            if nu == 0.5:
                k = r.neg_().exp_()
            elif nu == 1.5:
                k = torch.exp(-r).mul_(r.add_(1.0))
            else:
                k = torch.exp(-r).mul_(r.square().div_(3.0).add_(r).add_(1.0))
        return k.mul_(scale) if scale != 1.0 else k

    def bounded_predictions(
        self, x: NDArray[np.float64], device: torch.device | None = None
    ) -> tuple[Tensor, Tensor]:
        """The exact mean and an upper bound of the standard deviation over ``n x d`` rows.

        Returns:
            ``(mean, std_bound)``, each ``n`` (double, on ``device``), in the targets' units.
        """
        self._check(x)
        means, bounds = [], []
        with torch.no_grad():
            for start in range(0, x.shape[0], _CHUNK):
                c = torch.as_tensor(x[start : start + _CHUNK], dtype=torch.double)
                k = self._cross(c)
                means.append(self._const + k @ self._alpha)
                v = torch.linalg.solve_triangular(
                    self._bound_chol, k[:, self._bound_rows].T, upper=False
                )
                bounds.append((self._prior_var(c) - (v * v).sum(0)).clamp_min(1e-12))
        mean = torch.cat(means) * self._y_std + self._y_mean
        std = torch.cat(bounds).sqrt() * self._y_std
        return mean.to(device or "cpu"), std.to(device or "cpu")

    def exact_std(self, x: NDArray[np.float64], device: torch.device | None = None) -> Tensor:
        """The posterior standard deviation of the latent function at ``n x d`` rows."""
        self._check(x)
        out = []
        with torch.no_grad():
            for start in range(0, x.shape[0], _CHUNK):
                c = torch.as_tensor(x[start : start + _CHUNK], dtype=torch.double)
                k = self._cross(c)
                v = torch.linalg.solve_triangular(self._chol, k.T, upper=False)
                out.append((self._prior_var(c) - (v * v).sum(0)).clamp_min(1e-12))
        return (torch.cat(out).sqrt() * self._y_std).to(device or "cpu")

    def _check(self, x: NDArray[np.float64]) -> None:
        if self.n_features is None:
            raise RuntimeError("surrogate 'list_gp' is not fitted")
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected n x {self.n_features} feature rows, got {x.shape}")

    def _predict(self, x: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        with torch.no_grad():
            mean = torch.cat(
                [
                    self._const
                    + self._cross(torch.as_tensor(x[s : s + _CHUNK], dtype=torch.double))
                    @ self._alpha
                    for s in range(0, x.shape[0], _CHUNK)
                ]
            )
        return (mean * self._y_std + self._y_mean).numpy(), self.exact_std(x).numpy()

    def as_botorch_model(self) -> Model:
        """The fitted ``SingleTaskGP``: conditioned on the rows its hyperparameters were fitted
        on (all of them up to ``max_fit``; the subset beyond)."""
        if self.n_features is None:
            raise RuntimeError("surrogate 'list_gp' is not fitted")
        return self._model
