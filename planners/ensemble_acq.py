"""Acquisition over a long list from an ensemble's mean and spread, and batches by penalties.

The Monte-Carlo acquisition functions of BoTorch (qLogNEI) score every candidate jointly
with the baseline points, so their cost grows with the list *and* with the observations.
For a list of 10^4-10^5 candidates a per-candidate Gaussian summary of the surrogate is
enough: with mean ``mu`` and standard deviation ``sigma`` (of an ensemble: the members'
mean and calibrated spread, :mod:`surrogates.base`), and ``u = (mu - best) / sigma``,

* expected improvement (Jones, Schonlau and Welch, J. Glob. Optim. 13, 455 (1998)) in
  closed form, in its log form for stability far below the incumbent (Ament et al.,
  "Unexpected improvements to expected improvement for Bayesian optimization", NeurIPS
  2023): ``log EI = log sigma + log(phi(u) + u Phi(u))``;
* the upper confidence bound (Srinivas et al., ICML 2010): ``mu + sqrt(beta) sigma``;
* the mean (greedy exploitation);
* Thompson sampling of members (Thompson 1933; for ensembles, e.g. Lu and Van Roy,
  "Ensemble sampling", NeurIPS 2017): each slot of a batch takes the argmax of one member.

A batch of EI/UCB/mean picks is made by **local penalisation** (González, Dai, Hennig and
Lawrence, "Batch Bayesian optimization via local penalization", AISTATS 2016): after each
pick (and for each experiment still pending) the acquisition is multiplied by
``Phi((L ||x - x_j|| - M + mu_j) / sigma_j)``, the probability that ``x`` lies outside the
ball around ``x_j`` that a function with Lipschitz constant ``L`` and maximum ``M`` cannot
leave; ``L`` is estimated from the surrogate's mean over the list, distances are taken in
standardised features. Every cost is linear in the list and independent of the number of
observations; the tensors live on the GPU when one is present. On the CPU the scoring runs
in one thread (PyTorch's intra-op threads are set for it and restored): element-wise work on
10^5 numbers gains nothing from more, and on a machine whose cores are busy, threads waiting
for each other made one pick over 50,000 candidates 0.1-0.4 s instead of 5 ms.

When the standard deviation is expensive (an exact GP's costs ``O(n^2)`` per candidate) and
an upper bound of it is cheap, :func:`select_batch_refined` makes the same picks as
:func:`select_batch` would with the exact values: EI and UCB grow with the standard
deviation (and the penalties do not depend on a candidate's own), so a candidate scored with
its bound is scored at least as high as it truly is. The exact value is computed for the
candidates of best bound, the batch picked, and the exact value computed for more
candidates until every pick has its exact value; a pick then beats every other candidate's
bound, hence its exact score.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from surrogates.threads import torch_threads

logger = logging.getLogger(__name__)

__all__ = [
    "Acquisition",
    "default_device",
    "expected_improvement",
    "lipschitz_constant",
    "log_expected_improvement",
    "select_batch",
    "select_batch_refined",
    "upper_confidence_bound",
]

Acquisition = Literal["ei", "ucb", "mean", "thompson"]

_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _log_h(u: Tensor) -> Tensor:
    """``log(phi(u) + u Phi(u))``, accurate for every ``u``.

    Above -5 directly; below, as ``log phi(u) + log(1 + u sqrt(pi/2) erfcx(-u / sqrt 2))``
    (``Phi / phi`` through the scaled complementary error function, as BoTorch's
    ``log_ei`` does), and below -1e4 by the asymptotic ``log phi(u) - 2 log(-u)``.
    """
    safe = u.clamp_min(-5.0)
    phi = torch.exp(-0.5 * safe**2 - _LOG_SQRT_2PI)
    cdf = 0.5 * torch.erfc(-safe / _SQRT2)
    direct = torch.log((phi + safe * cdf).clamp_min(1e-300))
    low = u.clamp(-1e4, -5.0)
    ratio = math.sqrt(math.pi / 2) * torch.special.erfcx(-low / _SQRT2)  # Phi(u) / phi(u)
    mid = -0.5 * low**2 - _LOG_SQRT_2PI + torch.log((1.0 + low * ratio).clamp_min(1e-300))
    far = u.clamp_max(-1e4)
    tail = -0.5 * far**2 - _LOG_SQRT_2PI - 2.0 * torch.log(-far)
    return torch.where(u > -5.0, direct, torch.where(u > -1e4, mid, tail))


def log_expected_improvement(mean: Tensor, std: Tensor, best: float) -> Tensor:
    """``log E[max(Y - best, 0)]`` for ``Y ~ N(mean, std^2)`` (``n`` values, ``std > 0``)."""
    return torch.log(std) + _log_h((mean - best) / std)


def expected_improvement(mean: Tensor, std: Tensor, best: float) -> Tensor:
    """``E[max(Y - best, 0)]`` for ``Y ~ N(mean, std^2)`` (``n`` values, ``std > 0``)."""
    return torch.exp(log_expected_improvement(mean, std, best))


def upper_confidence_bound(mean: Tensor, std: Tensor, beta: float) -> Tensor:
    """``mean + sqrt(beta) std`` (BoTorch's convention for ``beta``)."""
    return mean + math.sqrt(beta) * std


def lipschitz_constant(x: Tensor, mean: Tensor, n_pairs: int = 4096, seed: int = 0) -> float:
    """An estimate of the Lipschitz constant of the mean over the list.

    The largest ``|mu_i - mu_j| / ||x_i - x_j||`` over random pairs of candidates, each
    paired with its nearest of a random sample (so that the slope is local, as the
    gradient norm of González et al. is).

    Args:
        x: ``n x d`` standardised features.
        mean: ``n`` means.
        n_pairs: Candidates sampled.
        seed: Seed of the sample.

    Returns:
        A positive number (``1e-9`` when the mean is flat).
    """
    n = x.shape[0]
    if n < 2:
        return 1e-9
    g = torch.Generator(device="cpu").manual_seed(seed)
    k = min(n, n_pairs)
    a = torch.randperm(n, generator=g)[:k].to(x.device)
    b = torch.randperm(n, generator=g)[: min(n, 1024)].to(x.device)
    d = torch.cdist(x[a], x[b])
    d = torch.where(d > 1e-9, d, torch.full_like(d, math.inf))
    dist, j = d.min(dim=1)
    ok = torch.isfinite(dist)
    if not bool(ok.any()):
        return 1e-9
    slope = (mean[a] - mean[b[j]]).abs()[ok] / dist[ok]
    return max(float(slope.max()), 1e-9)


def _log_penalty(
    x: Tensor, centre: Tensor, mu: float, sigma: float, lipschitz: float, top: float
) -> Tensor:
    """``log Phi((L ||x - x_j|| - M + mu_j) / sigma_j)`` for one centre ``x_j``."""
    z = (lipschitz * torch.linalg.vector_norm(x - centre, dim=-1) - top + mu) / max(sigma, 1e-12)
    return torch.special.log_ndtr(z)


def select_batch(
    acquisition: Acquisition,
    mean: Tensor,
    std: Tensor,
    x: Tensor,
    q: int,
    *,
    best: float,
    beta: float = 2.0,
    members: Tensor | None = None,
    pending: Sequence[tuple[Tensor, float, float]] = (),
    available: Tensor | None = None,
    seed: int = 0,
) -> tuple[list[int], list[float]]:
    """Pick ``q`` candidates (see the module docstring).

    Args:
        acquisition: ``"ei"``, ``"ucb"``, ``"mean"`` or ``"thompson"``.
        mean: ``n`` predicted means (larger is better).
        std: ``n`` predicted standard deviations (> 0).
        x: ``n x d`` standardised features (the penalisation's distances).
        q: Batch size.
        best: The incumbent (EI's reference value, and ``M`` of the penalisation).
        beta: UCB's exploration weight.
        members: ``s x n`` member predictions (calibrated spread), for Thompson sampling.
        pending: ``(features, mean, std)`` of experiments still running (penalised).
        available: ``n`` booleans: which candidates may be picked (default: all).
        seed: Seed of Thompson sampling's draw of members.

    Returns:
        The picked indices, best first, and the acquisition value of each pick (for EI its
        log, penalised; for Thompson the member's prediction).

    Raises:
        ValueError: If fewer than ``q`` candidates are available, or Thompson sampling is
            asked without members.
    """
    if mean.device.type != "cpu":
        return _select(acquisition, mean, std, x, q, best, beta, members, pending, available, seed)
    with torch_threads(1):  # see the module docstring
        return _select(acquisition, mean, std, x, q, best, beta, members, pending, available, seed)


def _select(
    acquisition: Acquisition,
    mean: Tensor,
    std: Tensor,
    x: Tensor,
    q: int,
    best: float,
    beta: float,
    members: Tensor | None,
    pending: Sequence[tuple[Tensor, float, float]],
    available: Tensor | None,
    seed: int,
) -> tuple[list[int], list[float]]:
    n = mean.shape[0]
    free = torch.ones(n, dtype=torch.bool, device=mean.device) if available is None else available
    free = free.clone()
    if int(free.sum()) < q:
        raise ValueError(f"{int(free.sum())} candidates available, {q} wanted")
    picks: list[int] = []
    scores: list[float] = []
    if acquisition == "thompson":
        if members is None:
            raise ValueError("Thompson sampling needs the ensemble's members")
        g = torch.Generator(device="cpu").manual_seed(seed)
        order = torch.randperm(members.shape[0], generator=g).tolist()
        for k in range(q):
            draw = members[order[k % len(order)]].masked_fill(~free, -math.inf)
            i = int(torch.argmax(draw))
            picks.append(i)
            scores.append(float(draw[i]))
            free[i] = False
        return picks, scores
    if acquisition == "ei":
        log_acq = log_expected_improvement(mean, std, best)
    else:
        raw = mean if acquisition == "mean" else upper_confidence_bound(mean, std, beta)
        # a positive transform of the score, which the multiplicative penalty needs
        log_acq = torch.log(torch.nn.functional.softplus((raw - raw.max()) / std.mean()) + 1e-30)
    need_penalty = q > 1 or len(pending) > 0
    top = max(best, float(mean.max()))
    lip = lipschitz_constant(x, mean, seed=seed) if need_penalty else 1.0
    for centre, mu, sigma in pending:
        log_acq = log_acq + _log_penalty(x, centre, mu, sigma, lip, top)
    for _ in range(q):
        masked = log_acq.masked_fill(~free, -math.inf)
        i = int(torch.argmax(masked))
        picks.append(i)
        scores.append(float(masked[i]))
        free[i] = False
        if len(picks) < q:
            log_acq = log_acq + _log_penalty(x, x[i], float(mean[i]), float(std[i]), lip, top)
    return picks, scores


def select_batch_refined(
    acquisition: Acquisition,
    mean: Tensor,
    std_bound: Tensor,
    exact_std: Callable[[Tensor], Tensor],
    x: Tensor,
    q: int,
    *,
    best: float,
    beta: float = 2.0,
    pending_rows: Sequence[int] = (),
    available: Tensor | None = None,
    seed: int = 0,
    block: int = 512,
) -> tuple[list[int], list[float], Tensor]:
    """:func:`select_batch` from upper bounds of the standard deviation, refined as needed.

    The picks are those :func:`select_batch` makes with the exact standard deviation for
    EI, and for UCB and the mean when ``q = 1`` and nothing is pending (their positive
    transform is scaled by the mean spread, which for batches is taken over the bounds).

    Args:
        acquisition: ``"ei"``, ``"ucb"`` or ``"mean"``.
        mean: ``n`` predicted means (larger is better).
        std_bound: ``n`` upper bounds of the standard deviations (> 0).
        exact_std: Maps ``k`` candidate indices (a CPU ``long`` tensor) to their exact
            standard deviations (``k``, never above their bounds).
        x: ``n x d`` standardised features (the penalisation's distances).
        q: Batch size.
        best: The incumbent.
        beta: UCB's exploration weight.
        pending_rows: Candidates of experiments still running (penalised).
        available: ``n`` booleans: which candidates may be picked (default: all).
        seed: Seed of the Lipschitz estimate's sample.
        block: Candidates refined in the first round (doubling each further round).

    Returns:
        The picks and their scores, as :func:`select_batch` returns them, and the ``n``
        standard deviations used: exact at the picks, the pending and every refined row.

    Raises:
        ValueError: For Thompson sampling (it needs members, not a bound).
    """
    if acquisition == "thompson":
        raise ValueError("Thompson sampling needs an ensemble's members, not a bound")
    n = mean.shape[0]
    free = torch.ones(n, dtype=torch.bool, device=mean.device) if available is None else available
    std = std_bound.clone()
    exact = torch.zeros(n, dtype=torch.bool, device=mean.device)

    def refine(rows: Tensor) -> None:
        rows = rows[~exact[rows]]
        if rows.numel():
            std[rows] = torch.minimum(exact_std(rows.cpu()).to(std), std_bound[rows])
            exact[rows] = True

    refine(torch.as_tensor(list(pending_rows), dtype=torch.long, device=mean.device))
    size = block
    while True:
        if acquisition == "ei":
            ranking = log_expected_improvement(mean, std, best)
        elif acquisition == "ucb":
            ranking = upper_confidence_bound(mean, std, beta)
        else:
            ranking = mean.clone()
        ranking = ranking.masked_fill(~free | exact, -math.inf)
        k = min(size, int((free & ~exact).sum()))
        if k:
            refine(torch.topk(ranking, k).indices)
        pending = [(x[r], float(mean[r]), float(std[r])) for r in pending_rows]
        picks, scores = select_batch(
            acquisition,
            mean,
            std,
            x,
            q,
            best=best,
            beta=beta,
            pending=pending,
            available=free,
            seed=seed,
        )
        if all(bool(exact[i]) for i in picks):
            return picks, scores, std
        size *= 2
