"""Speed settings of the Bayesian optimisation planners that adapt to the data size.

A suggestion's cost has three parts (measured by ``benchmarks/planner_speed.py``):

* **fitting the GP** (marginal likelihood, L-BFGS-B): ``O(n^3)`` per iteration for an exact
  GP, tens to hundreds of iterations from BoTorch's default starting point; reusing
  earlier hyperparameters (Snoek et al., "Practical Bayesian Optimization of Machine
  Learning Algorithms", NeurIPS 2012, keep them between iterations) needs none;
* **building the acquisition**: qLogNEI integrates over the incumbent among its
  ``X_baseline`` points (Letham et al., "Constrained Bayesian Optimization with Noisy
  Experiments", Bayesian Analysis 2019), jointly with the candidates, so a baseline of all
  ``n`` observations costs ``O(n^2)`` per evaluation and its pruning ``O(n^3)``; only the
  points that can be the incumbent matter, so a subset of the best posterior means is kept;
* **optimising the acquisition** (multi-start L-BFGS-B, sequential greedy over ``q``):
  proportional to restarts x iterations x evaluation cost, which grows with ``n``.

Warm starts (``warm_start``, off by default; from ``warm_start_min_n`` = 200 observations) keep
decisions replayable from the store (a planner rebuilt after a restart has no memory of
earlier fits). So a warm fit never starts from the previous decision's fit, whose history a
rebuilt planner cannot know, but from an **anchor**: a cold fit to the first ``m``
observations told, where ``m`` is a fixed function of ``n`` (:func:`anchor_size`). An
uninterrupted planner and a rebuilt one compute the same anchor, hence the same warm fit and
the same decision; the anchor is refitted from scratch every ``refit_every`` observations
(about an eighth of the data), so it has seen at least seven eighths of what the GP is
conditioned on.

By default (``warm_start_maxiter = 0``) the anchor's hyperparameters are used as they are:
the GP is conditioned on every observation with them and no likelihood optimisation runs
between refits, as BO loops that re-estimate hyperparameters only every few iterations do
(Snoek et al. 2012 above; BoTorch's ``condition_on_observations``). Continuing L-BFGS-B
from the anchor does not pay: it starts without curvature information and, on Hartmann6
at 500 observations, took as many iterations as a cold fit (about 50, each an ``O(n^3)``
Cholesky and its backward pass) to reach the same optimum, and stopped after 15 at a
looser tolerance (``ftol = 1e-5``) at a worse likelihood than the cold fit's. The
lengthscales fitted to the first 480 and to all 500 observations agree to 0.1 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from botorch.models.model import Model
from torch import Tensor

from planners.outcomes import OutcomeLayout

__all__ = [
    "SMALL_N",
    "OptimiserSettings",
    "anchor_seed",
    "anchor_size",
    "baseline_subset",
    "local_subset",
    "optimiser_settings",
    "refit_interval",
]

SMALL_N = 200
"""Below this many model points the acquisition optimiser keeps its thorough settings."""


def refit_interval(n: int, refit_every: int | None) -> int:
    """Observations between cold refits of the warm-start anchor.

    Args:
        n: Observations told so far.
        refit_every: The ``refit_every`` option; ``None`` chooses ``max(16, 2^k)`` with
            ``2^k`` the largest power of two not above ``n / 8`` (about every 12-25 % of
            the data, so a cold fit's cost is spread over many suggestions).

    Returns:
        The interval, at least 1.
    """
    if refit_every is not None:
        return refit_every
    if n < 128:
        return 16
    return max(16, 1 << ((n // 8).bit_length() - 1))


def anchor_size(n: int, refit_every: int | None) -> int:
    """How many of the first observations the warm-start anchor is fitted to.

    The largest multiple of :func:`refit_interval` not above ``n``; a function of ``n``
    alone, so a rebuilt planner finds the same anchor.

    Args:
        n: Observations told so far.
        refit_every: The ``refit_every`` option (``None``: automatic).
    """
    step = refit_interval(n, refit_every)
    return (n // step) * step


def anchor_seed(seed: int, m: int) -> int:
    """The torch seed of the anchor fit to ``m`` observations (random restarts only)."""
    seq = np.random.SeedSequence([seed, m, 0xA4C])
    return int(seq.generate_state(1, dtype=np.uint32)[0])


@dataclass(frozen=True)
class OptimiserSettings:
    """Settings of one acquisition optimisation.

    Attributes:
        num_restarts: Starting points of L-BFGS-B.
        raw_samples: Points screened to choose them.
        maxiter: Iteration limit per run.
        sequential: Sequential greedy over the ``q`` points (else one joint optimisation).
    """

    num_restarts: int
    raw_samples: int
    maxiter: int
    sequential: bool


def optimiser_settings(
    n_model: int,
    q: int,
    *,
    num_restarts: int | None,
    raw_samples: int | None,
    maxiter: int | None,
    sequential: bool | None,
) -> OptimiserSettings:
    """The acquisition optimiser's settings: the options, with ``None`` chosen from ``n``.

    Below :data:`SMALL_N` model points an evaluation is cheap and the thorough settings are
    kept (8 restarts, 256 raw samples, 200 iterations, sequential greedy over the batch).
    From there on, 4 restarts, 128 raw samples, 100 iterations and one joint optimisation
    of all ``q`` points: on Hartmann6 with 500 observations these found batches as good as
    the thorough settings' (regret within 0.001) at under half the CPU time, most of which
    is the acquisition's backward pass per L-BFGS-B step (``benchmarks/planner_speed.py``
    prints the regret beside the thorough settings' and BoTorch's defaults).

    Args:
        n_model: Points the GP is fitted to.
        q: Batch size.
        num_restarts: Option value or ``None``.
        raw_samples: Option value or ``None``.
        maxiter: Option value or ``None``.
        sequential: Option value or ``None``.
    """
    small = n_model < SMALL_N
    return OptimiserSettings(
        num_restarts=num_restarts if num_restarts is not None else (8 if small else 4),
        raw_samples=raw_samples if raw_samples is not None else (256 if small else 128),
        maxiter=maxiter if maxiter is not None else (200 if small else 100),
        sequential=(small and q > 1) if sequential is None else (sequential and q > 1),
    )


def baseline_subset(
    model: Model, layout: OutcomeLayout, x: Tensor, max_baseline: int | None
) -> Tensor:
    """The baseline points of qLogNEI: those with the best posterior means.

    The noisy incumbent is among the points whose posterior mean is high; points far
    below it have (numerically) no probability of being the best and only cost time. With
    several objectives every point is kept (the Pareto front needs them all; the
    acquisition prunes them itself).

    Args:
        model: The fitted outcome model (its outputs in the layout's column order).
        layout: Which output is which.
        x: ``n x d`` inputs the model was fitted to.
        max_baseline: Most points kept (``None``: all).

    Returns:
        ``k x d`` rows of ``x`` (``k <= max_baseline``), best first; ``x`` itself when it
        is no larger.
    """
    if max_baseline is None or x.shape[0] <= max_baseline or layout.n_objectives != 1:
        return x
    with torch.no_grad():
        mean = model.posterior(x).mean  # type: ignore[attr-defined]  # every GP posterior has one
        mean = mean[..., : len(layout.objectives)]
        util = layout.utilities(mean)[:, 0]
        ok = layout.satisfied(mean)
        util = torch.where(ok, util, util - util.abs().max() - 1.0)
    keep = util.argsort(descending=True)[:max_baseline]
    return x[keep]


def local_subset(layout: OutcomeLayout, x: Tensor, y: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` observations nearest the incumbent: the trust region of the
    local GP used above ``max_exact`` observations (after Eriksson et al., "Scalable
    Global Optimization via Local Bayesian Optimization", NeurIPS 2019).

    Args:
        layout: Which output is which.
        x: ``n x d`` inputs.
        y: ``n x m`` signed outputs; the incumbent is the best sum of utilities among the
            rows meeting the outcome constraints (any row when none does).
        k: Points kept.

    Returns:
        ``min(k, n)`` row indices, nearest first.
    """
    util = layout.utilities(y)
    ok = layout.satisfied(y)
    score = util.sum(dim=-1) if util.shape[-1] > 1 else util[:, 0]
    score = torch.where(ok, score, score - score.abs().max() - 1.0)
    centre = x[int(score.argmax())]
    dist = (x - centre).norm(dim=-1)
    return dist.argsort()[:k]
