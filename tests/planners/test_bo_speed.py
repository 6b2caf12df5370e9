"""Speed settings of the BO planners (planners/bo_speed.py and their use in planners/bo.py):
replayable warm starts, the qLogNEI baseline subset and optimiser settings adapting to n.

Fixed seeds, noise-free truth; optimiser settings small so the file runs in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest
import torch

from models.errors import InvalidCampaignError
from models.objectives import Objective
from models.params import ContinuousParameter, SearchSpace
from models.records import Observation
from planners.bo import QLogNEIPlanner
from planners.bo_speed import (
    anchor_size,
    baseline_subset,
    optimiser_settings,
    refit_interval,
)
from planners.outcomes import OutcomeLayout
from surrogates.gp import fit_single_task_gp

FAST = {"num_restarts": 2, "raw_samples": 32, "mc_samples": 32, "maxiter": 30}
WARM = {"warm_start": True, "warm_start_min_n": 0, **FAST}  # warm starts from the first fit on
SPACE = SearchSpace(
    parameters=[ContinuousParameter(name=n, lower=0.0, upper=1.0) for n in ("x1", "x2")]
)
MAXIMIZE = [Objective(name="y", direction="maximize")]


def bowl(p: Mapping[str, object]) -> float:
    """Noise-free test function, maximum 0.0302 at (0.8138, 0.3)."""
    a, b = float(p["x1"]), float(p["x2"])  # type: ignore[arg-type]
    return -((a - 0.7) ** 2) - 2 * (b - 0.3) ** 2 + 0.05 * math.sin(9 * a)


def grid(k: int) -> list[Observation]:
    """``k`` observations on a scrambled grid, in a fixed order."""
    pts = [{"x1": ((7 * i) % k + 0.5) / k, "x2": ((3 * i) % 11 + 0.5) / 11} for i in range(k)]
    return [Observation(parameters=p, objectives={"y": bowl(p)}) for p in pts]


def test_refit_interval_and_anchor_depend_on_n_only() -> None:
    assert refit_interval(10, None) == 16
    assert refit_interval(500, None) == 32  # largest power of two <= 500 / 8
    assert refit_interval(10_000, None) == 1024
    assert refit_interval(10_000, 7) == 7
    assert anchor_size(15, None) == 0
    assert anchor_size(20, None) == 16
    assert anchor_size(500, None) == 480
    anchors = [anchor_size(n, None) for n in range(0, 3000)]
    assert all(a <= n for n, a in enumerate(anchors))
    assert anchors == sorted(anchors)  # never moves back as observations come in


def test_optimiser_settings_adapt_to_n_and_options_win() -> None:
    small = optimiser_settings(
        50, 4, num_restarts=None, raw_samples=None, maxiter=None, sequential=None
    )
    large = optimiser_settings(
        500, 4, num_restarts=None, raw_samples=None, maxiter=None, sequential=None
    )
    assert (small.num_restarts, small.raw_samples, small.maxiter) == (8, 256, 200)
    assert (large.num_restarts, large.raw_samples, large.maxiter) == (4, 128, 100)
    assert small.sequential
    assert not large.sequential  # one joint optimisation of the batch
    given = optimiser_settings(500, 4, num_restarts=3, raw_samples=9, maxiter=5, sequential=False)
    assert (given.num_restarts, given.raw_samples, given.maxiter, given.sequential) == (
        3,
        9,
        5,
        False,
    )
    assert not optimiser_settings(
        500, 1, num_restarts=None, raw_samples=None, maxiter=None, sequential=True
    ).sequential


def test_warm_started_decisions_replay_in_a_rebuilt_planner() -> None:
    observations = grid(24)
    running = QLogNEIPlanner(SPACE, MAXIMIZE, seed=3, **WARM)
    running.tell(observations[:20])
    first = running.ask(2)
    assert first.details["warm_started"] is True
    assert first.details["warm_start_anchor"] == 16
    assert first.details["seconds_anchor_fit"] >= 0
    running.tell(observations[20:])
    second = running.ask(2)
    assert second.details["warm_start_anchor"] == 16
    assert "seconds_anchor_fit" not in second.details  # the anchor was reused
    rebuilt = QLogNEIPlanner(SPACE, MAXIMIZE, seed=3, **WARM)
    rebuilt.tell(observations)
    replay = rebuilt.ask(2)
    assert "seconds_anchor_fit" in replay.details  # it had to fit the anchor itself
    assert replay.details["hyperparameters"] == second.details["hyperparameters"]
    assert [p.parameters for p in replay.proposals] == [p.parameters for p in second.proposals]


def test_warm_fit_reaches_the_cold_fits_hyperparameters() -> None:
    observations = grid(40)
    warm = QLogNEIPlanner(SPACE, MAXIMIZE, seed=1, **WARM)
    cold = QLogNEIPlanner(SPACE, MAXIMIZE, seed=1, warm_start=False, **FAST)
    for planner in (warm, cold):
        planner.tell(observations)
    hw = warm.ask(1).details
    hc = cold.ask(1).details
    assert hw["warm_started"]
    assert hw["warm_start_anchor"] == 32
    assert not hc["warm_started"]
    assert "warm_start_anchor" not in hc
    lw = torch.tensor(hw["hyperparameters"]["lengthscales"]).log()
    lc = torch.tensor(hc["hyperparameters"]["lengthscales"]).log()
    assert torch.allclose(lw, lc, atol=0.3)  # same optimum of the likelihood, within 35 %


def test_a_warm_start_takes_the_anchors_hyperparameters_as_they_are() -> None:
    observations = grid(40)
    planner = QLogNEIPlanner(SPACE, MAXIMIZE, seed=2, warm_start=True, warm_start_min_n=0, **FAST)
    planner.tell(observations)
    d = planner.ask(1).details
    assert d["warm_started"] is True
    assert d["warm_start_anchor"] == 32
    # the anchor: a cold fit to the first 32 observations, alone
    anchor = QLogNEIPlanner(SPACE, MAXIMIZE, seed=2, warm_start=False, **FAST)
    anchor.tell(observations[:32])
    da = anchor.ask(1).details
    for key in ("lengthscales", "noise", "mean_constant"):
        assert d["hyperparameters"][key] == pytest.approx(da["hyperparameters"][key], rel=1e-9)
    # the outcome standardisation is that of all 40 observations
    ys = torch.tensor([o.objectives["y"] for o in observations], dtype=torch.double)
    assert d["hyperparameters"]["outcome_mean"][0] == pytest.approx(float(ys.mean()))


def test_a_warm_start_begins_at_200_observations_and_replays() -> None:
    rng = torch.Generator().manual_seed(0)
    pts = torch.rand(204, 2, generator=rng, dtype=torch.double)
    observations = [
        Observation(parameters=p, objectives={"y": bowl(p)})
        for p in ({"x1": float(a), "x2": float(b)} for a, b in pts.tolist())
    ]
    running = QLogNEIPlanner(SPACE, MAXIMIZE, seed=4, warm_start=True, **FAST)
    running.tell(observations[:200])
    first = running.ask(2).details
    assert first["warm_started"] is True
    assert first["warm_start_anchor"] == 192  # refit every 16 below 256 observations
    running.tell(observations[200:])
    second = running.ask(2)
    assert "seconds_anchor_fit" not in second.details
    rebuilt = QLogNEIPlanner(SPACE, MAXIMIZE, seed=4, warm_start=True, **FAST)
    rebuilt.tell(observations)
    replay = rebuilt.ask(2)
    assert replay.details["hyperparameters"] == second.details["hyperparameters"]
    assert [p.parameters for p in replay.proposals] == [p.parameters for p in second.proposals]
    assert [p.score for p in replay.proposals] == [p.score for p in second.proposals]
    best = max(bowl(p.parameters) for p in second.proposals)
    assert best > 0.03 - 0.01  # within 0.01 of the maximum


def test_baseline_subset_keeps_the_best_posterior_means() -> None:
    obs = grid(30)
    x = torch.tensor([[o.parameters["x1"], o.parameters["x2"]] for o in obs], dtype=torch.double)
    y = torch.tensor([[o.objectives["y"]] for o in obs], dtype=torch.double)
    model = fit_single_task_gp(x, y, device="cpu")
    layout = OutcomeLayout(tuple(MAXIMIZE))
    subset = baseline_subset(model, layout, x, 5)
    assert subset.shape == (5, 2)
    with torch.no_grad():
        mean = model.posterior(x).mean[:, 0]
    expected = x[mean.argsort(descending=True)[:5]]
    assert torch.equal(subset, expected)
    assert any(torch.equal(row, x[int(y.argmax())]) for row in subset)  # the best observed
    assert baseline_subset(model, layout, x, None) is x
    assert baseline_subset(model, layout, x, 30) is x
    minimise = OutcomeLayout((Objective(name="y", direction="minimize"),))
    worst = baseline_subset(model, minimise, -x[:0], 5)  # empty input stays empty
    assert worst.shape[0] == 0


def test_planner_records_what_it_did() -> None:
    planner = QLogNEIPlanner(SPACE, MAXIMIZE, seed=0, max_baseline=4, sequential=False, **FAST)
    planner.tell(grid(12))
    decision = planner.ask(3)
    d = decision.details
    assert d["n_baseline"] <= 4
    assert d["sequential"] is False
    assert (d["num_restarts"], d["raw_samples"], d["maxiter"]) == (2, 32, 30)
    assert d["mc_samples"] == 32
    assert d["seconds_acq_build"] >= 0
    assert d["n_model"] == 12
    assert len(decision.proposals) == 3
    assert len({tuple(p.parameters.values()) for p in decision.proposals}) == 3
    defaults = QLogNEIPlanner(SPACE, MAXIMIZE, seed=0)
    defaults.tell(grid(12))
    dd = defaults.ask(2).details
    assert (dd["num_restarts"], dd["raw_samples"], dd["maxiter"], dd["sequential"]) == (
        8,
        256,
        200,
        True,
    )
    assert dd["n_baseline"] == 12  # fewer than max_baseline: all kept
    assert dd["warm_started"] is False  # fewer than warm_start_min_n: a cold fit


def test_proposals_approach_the_optimum_with_the_fast_defaults() -> None:
    planner = QLogNEIPlanner(SPACE, MAXIMIZE, seed=5)
    planner.tell(grid(30))
    best_told = max(o.objectives["y"] for o in planner.observations)
    values = []
    for _ in range(2):  # the first batch probes around the best told, the second uses it
        decision = planner.ask(2)
        planner.tell(
            [
                Observation(parameters=p.parameters, objectives={"y": bowl(p.parameters)})
                for p in decision.proposals
            ]
        )
        values += [bowl(p.parameters) for p in decision.proposals]
    assert max(values) > best_told  # improves on the data
    assert max(values) > 0.0302 - 1e-3  # within 0.001 of the maximum


@pytest.mark.parametrize(
    ("key", "value"),
    [("refit_every", 0), ("max_baseline", 0), ("sequential", "sometimes"), ("num_restarts", 0)],
)
def test_bad_speed_options_name_the_key(key: str, value: object) -> None:
    options: dict[str, Any] = {key: value}
    with pytest.raises(InvalidCampaignError, match=rf"planner\.options\.{key}"):
        QLogNEIPlanner(SPACE, MAXIMIZE, **options)
