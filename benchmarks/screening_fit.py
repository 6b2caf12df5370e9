"""One-shot model check for the screening pool: hits among a GP's best-predicted candidates.

Each GP variant (kernel, linear mean, number of principal components) is fitted once to
``n`` random rows of the screening benchmark's pool (:mod:`benchmarks.screening`; seeds as
its initial rows, ``1000 + seed``), and the 100 untried candidates of best predicted mean
are counted against the pool's top-1 % hits; the mean absolute error over the untried rows
and the CPU seconds of fit and prediction are printed beside. No loop: a quick triage of
model choices before the (slow) campaign runs of :mod:`benchmarks.screening`.

Variants: BoTorch's ``SingleTaskGP`` default (RBF ARD, LogNormal priors) or the Matern-5/2
Gamma priors of :func:`surrogates.gp.gamma_prior_modules`; constant or GPyTorch
``LinearMean`` mean; 10, 20 or 40 principal components (:func:`planners.screening.project`)
or all standardised features.

Run from the repository root:  python -m benchmarks.screening_fit
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms import Standardize
from gpytorch.means import LinearMean
from gpytorch.mlls import ExactMarginalLogLikelihood

from benchmarks.screening import pool
from planners.screening import project
from surrogates.gp import gamma_prior_modules

VARIANTS: list[tuple[str, int | None, str, bool]] = [
    ("rbf, 20 components", 20, "rbf", False),
    ("matern_gamma, 20 components", 20, "gamma", False),
    ("rbf + LinearMean, 20 components", 20, "rbf", True),
    ("matern_gamma + LinearMean, 20 components", 20, "gamma", True),
    ("rbf, 10 components", 10, "rbf", False),
    ("rbf, 40 components", 40, "rbf", False),
    ("matern_gamma + LinearMean, 40 components", 40, "gamma", True),
    ("rbf, all 149 standardised features", None, "rbf", False),
    ("matern_gamma + LinearMean, all features", None, "gamma", True),
]


def fit_and_rank(
    rows: np.ndarray, utility: np.ndarray, hit: np.ndarray, kernel: str, linear: bool, train: Any
) -> tuple[int, float, float]:
    """Hits among the 100 best-predicted untried rows, MAE over the untried, CPU seconds."""
    d = rows.shape[1]
    modules: dict[str, Any] = {}
    if kernel == "gamma":
        k, lik = gamma_prior_modules(d, infer_noise=True)
        modules = {"covar_module": k, "likelihood": lik}
    if linear:
        modules["mean_module"] = LinearMean(d)
    t0 = time.process_time()
    model = SingleTaskGP(
        torch.as_tensor(rows[train]),
        torch.as_tensor(utility[train]).unsqueeze(-1),
        outcome_transform=Standardize(m=1),
        **modules,
    )
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    model.eval()
    with torch.no_grad():
        mu = torch.cat(
            [model.posterior(torch.as_tensor(c)).mean.reshape(-1) for c in np.array_split(rows, 10)]
        ).numpy()
    mu[train] = -np.inf
    untried = np.isfinite(mu)
    top = np.argsort(-mu)[:100]
    mae = float(np.abs(mu[untried] - utility[untried]).mean())
    return int(hit[top].sum()), mae, time.process_time() - t0


def main() -> None:
    """Print the table (see the module docstring)."""
    torch.set_num_threads(1)
    _, _, x, truth = pool()
    utility = -truth
    n = len(utility)
    hit = utility >= np.sort(utility)[-max(1, n // 100)]
    xs = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    projected = {k: project(xs, k) for k in (10, 20, 40)}
    print("| rows | variant | hits in top 100 (seeds 0, 1) | MAE (eV/atom) | CPU s |")
    print("|---|---|---|---|---|")
    for n_train in (30, 110):
        for label, k, kernel, linear in VARIANTS:
            rows = xs if k is None else projected[k]
            res = []
            for seed in (0, 1):
                train = np.random.default_rng(1000 + seed).choice(n, n_train, replace=False)
                res.append(fit_and_rank(rows, utility, hit, kernel, linear, train))
            h, m, s = zip(*res, strict=True)
            print(
                f"| {n_train} | {label} | {h[0]}, {h[1]} | {m[0]:.3f}, {m[1]:.3f} "
                f"| {s[0]:.1f}, {s[1]:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
