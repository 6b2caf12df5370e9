"""Closed-form scores against Monte-Carlo estimates, and the batch selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from planners.ensemble_acq import (
    expected_improvement,
    lipschitz_constant,
    log_expected_improvement,
    select_batch,
    select_batch_refined,
    upper_confidence_bound,
)

MEAN = torch.tensor([0.0, 0.5, -1.0, 2.0, -1.5], dtype=torch.double)
STD = torch.tensor([1.0, 0.3, 0.5, 2.0, 0.7], dtype=torch.double)
BEST = 0.4


def test_expected_improvement_matches_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    n = 400_000
    closed = expected_improvement(MEAN, STD, BEST).numpy()
    for k in range(len(MEAN)):
        y = rng.normal(float(MEAN[k]), float(STD[k]), n)
        gain = np.maximum(y - BEST, 0.0)
        se = gain.std(ddof=1) / math.sqrt(n)
        assert abs(gain.mean() - closed[k]) <= 4 * se + 1e-12, k


def test_ucb_matches_botorch_monte_carlo_form() -> None:
    # qUCB's Monte-Carlo form: mean + sqrt(beta pi / 2) |Y - mean|, whose expectation is UCB
    rng = np.random.default_rng(1)
    n, beta = 400_000, 2.0
    closed = upper_confidence_bound(MEAN, STD, beta).numpy()
    for k in range(len(MEAN)):
        y = rng.normal(float(MEAN[k]), float(STD[k]), n)
        mc = float(MEAN[k]) + math.sqrt(beta * math.pi / 2) * np.abs(y - float(MEAN[k]))
        se = mc.std(ddof=1) / math.sqrt(n)
        assert abs(mc.mean() - closed[k]) <= 4 * se, k


def test_log_ei_is_finite_and_ordered_far_below_the_incumbent() -> None:
    mean = torch.tensor([-30.0, -20.0, -10.0, -5.0001, -4.9999], dtype=torch.double)
    log_ei = log_expected_improvement(mean, torch.ones(5, dtype=torch.double), 0.0)
    assert torch.all(torch.isfinite(log_ei))
    assert torch.all(log_ei[1:] > log_ei[:-1])
    assert float(log_ei[3]) == pytest.approx(float(log_ei[4]), abs=2e-3)  # continuous at -5
    exact = math.log(math.exp(-12.5) / math.sqrt(2 * math.pi) - 5 * 0.5 * math.erfc(5 / 2**0.5))
    assert float(log_ei[3]) == pytest.approx(exact, abs=2e-3)


def test_batch_is_penalised_apart_and_pending_points_count() -> None:
    # two bumps: candidates 0-9 near x=0 (best), 10-19 near x=5 (a close second); without
    # the penalty the batch would take two neighbours of the first bump
    x = torch.cat([torch.linspace(-0.1, 0.1, 10), torch.linspace(4.9, 5.1, 10)]).double()
    x = x.unsqueeze(-1)
    mean = torch.cat([torch.full((10,), 1.0), torch.full((10,), 0.99)]).double()
    mean = mean + 1e-4 * torch.arange(20).double() % 1e-3
    std = torch.full((20,), 0.1, dtype=torch.double)
    greedy_one, _ = select_batch("ei", mean, std, x, 1, best=0.9)
    assert greedy_one[0] < 10
    picks, scores = select_batch("ei", mean, std, x, 2, best=0.9)
    assert picks[0] < 10
    assert picks[1] >= 10
    assert scores[0] >= scores[1]
    pend, _ = select_batch("ei", mean, std, x, 1, best=0.9, pending=[(x[9], float(mean[9]), 0.1)])
    assert pend[0] >= 10
    free = torch.ones(20, dtype=torch.bool)
    free[10:] = False
    only, _ = select_batch("ucb", mean, std, x, 3, best=0.9, available=free)
    assert all(i < 10 for i in only)
    assert len(set(only)) == 3


def test_thompson_takes_one_member_per_pick_and_needs_members() -> None:
    members = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.double)
    mean, std, x = members.mean(0), members.std(0) + 0.1, torch.eye(4, dtype=torch.double)
    picks, _ = select_batch("thompson", mean, std, x, 2, best=0.0, members=members, seed=3)
    assert sorted(picks) == [1, 3]
    with pytest.raises(ValueError, match="members"):
        select_batch("thompson", mean, std, x, 1, best=0.0)
    with pytest.raises(ValueError, match="available"):
        select_batch("ei", mean, std, x, 5, best=0.0)


def test_lipschitz_constant_of_a_linear_mean() -> None:
    x = torch.rand(500, 3, dtype=torch.double, generator=torch.Generator().manual_seed(0))
    mean = x @ torch.tensor([3.0, 0.0, 4.0], dtype=torch.double)
    lip = lipschitz_constant(x, mean)
    assert 2.0 < lip <= 5.0 + 1e-9


@pytest.mark.parametrize(
    ("acquisition", "q", "n_pending"), [("ei", 1, 0), ("ei", 4, 2), ("ucb", 1, 0), ("mean", 1, 0)]
)
def test_refined_selection_makes_the_exact_picks(acquisition: str, q: int, n_pending: int) -> None:
    # exact standard deviations, and bounds above them by a random factor; the refined
    # selection must pick what select_batch picks with the exact values everywhere
    g = torch.Generator().manual_seed(0)
    n = 3000
    x = torch.rand(n, 4, generator=g, dtype=torch.double)
    mean = torch.sin(4 * x[:, 0]) + x[:, 1]
    exact = 0.05 + 0.3 * torch.rand(n, generator=g, dtype=torch.double)
    bound = exact * (1 + 2 * torch.rand(n, generator=g, dtype=torch.double))
    free = torch.ones(n, dtype=torch.bool)
    free[:10] = False
    pending_rows = list(range(10, 10 + n_pending))
    free[pending_rows] = False
    asked: list[int] = []

    def exact_std(rows: torch.Tensor) -> torch.Tensor:
        asked.extend(rows.tolist())
        return exact[rows]

    picks, scores, std = select_batch_refined(
        acquisition,  # type: ignore[arg-type]
        mean,
        bound,
        exact_std,
        x,
        q,
        best=1.2,
        pending_rows=pending_rows,
        available=free,
        block=64,
    )
    pending = [(x[r], float(mean[r]), float(exact[r])) for r in pending_rows]
    ref, ref_scores = select_batch(
        acquisition,  # type: ignore[arg-type]
        mean,
        exact,
        x,
        q,
        best=1.2,
        pending=pending,
        available=free,
    )
    assert picks == ref
    if acquisition == "ei":  # UCB's and the mean's positive transform is scaled by the spreads
        assert scores == pytest.approx(ref_scores)
    assert torch.equal(std[picks], exact[picks])
    assert len(set(asked)) == len(asked) < n // 2  # each refined once, far from all
    with pytest.raises(ValueError, match="Thompson"):
        select_batch_refined("thompson", mean, bound, exact_std, x, 1, best=0.0)
