"""BO planners model related campaigns jointly (``related_campaigns``, a multi-task GP)."""

from __future__ import annotations

import math

import pytest

from models.errors import InvalidCampaignError
from models.objectives import Objective
from models.params import ContinuousParameter, SearchSpace
from models.records import Observation
from planners.base import make_planner

SPACE = SearchSpace(parameters=[ContinuousParameter(name=n, lower=0, upper=1) for n in "ab"])
MAX = [Objective(name="y", direction="maximize")]


def bowl(a: float, b: float) -> float:
    """Noise-free; best (0) at a = 0.8, b = 0.3."""
    return -((a - 0.8) ** 2) - (b - 0.3) ** 2


def _grid(k: int) -> list[tuple[float, float]]:
    return [((i + 0.5) / k, (j + 0.5) / k) for i in range(k) for j in range(k)]


def _best_after(n: int, seed: int, related: bool) -> tuple[float, list[dict[str, object]]]:
    options: dict[str, object] = {"num_restarts": 2, "raw_samples": 64}
    if related:
        options["related_campaigns"] = ["earlier"]
    planner = make_planner("qlognei", SPACE, MAX, seed=seed, options=options)
    if related:  # the earlier campaign: the same bowl, rescaled and shifted
        planner.tell_related(
            "earlier",
            [Observation({"a": a, "b": b}, {"y": 5 * bowl(a, b) + 2}) for a, b in _grid(5)],
        )
    best, details = -math.inf, []
    for _ in range(n):
        decision = planner.ask(1)
        details.append(decision.details)
        point = decision.proposals[0].parameters
        y = bowl(float(point["a"]), float(point["b"]))
        planner.tell([Observation(point, {"y": y})])
        best = max(best, y)
    return best, details


def test_a_related_campaign_finds_the_optimum_sooner_and_the_decisions_say_so() -> None:
    with_related = [_best_after(5, seed, related=True) for seed in (3, 4)]
    without = [_best_after(5, seed, related=False) for seed in (3, 4)]
    assert sum(b for b, _ in with_related) > sum(b for b, _ in without)
    details = with_related[0][1]
    assert [d["phase"] for d in details[:3]] == ["initial_design", "initial_design", "bayesopt"]
    assert details[0]["initial_points"] == 2  # the related data stand in for the rest
    transfer = details[2]["transfer"]
    assert transfer["model"] == "MultiTaskGP"
    assert transfer["related"] == {"earlier": 25}
    assert transfer["task_correlation"]["earlier"] > 0
    assert all("transfer" not in d for _, ds in without for d in ds)


def test_without_related_data_the_planner_is_the_plain_one() -> None:
    planner = make_planner("qlognei", SPACE, MAX, seed=3, options={"related_campaigns": ["x"]})
    assert planner.ask(1).details["initial_points"] == 4  # the usual design
    assert planner.related == {}


def test_related_campaigns_need_one_objective_and_the_gp() -> None:
    two = [*MAX, Objective(name="z", direction="minimize")]
    with pytest.raises(InvalidCampaignError) as info:
        make_planner("bo", SPACE, two, options={"related_campaigns": ["x"]})
    assert "planner.options.related_campaigns" in str(info.value)
    with pytest.raises(InvalidCampaignError):
        make_planner("qlognei", SPACE, MAX, options={"related_campaigns": ["x"], "surrogate": "rf"})
