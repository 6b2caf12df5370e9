"""Other libraries' optimisers as benchmark baselines (benchmarks/bench_baselines.py): the
common initial design, pool rows only, never a measured or pending row, replayable."""

from __future__ import annotations

import importlib.util
import math

import pytest

from benchmarks.bench_baselines import make_baseline
from benchmarks.bench_problems import PoolRandom
from models.objectives import Objective
from models.params import ContinuousParameter, SearchSpace
from models.records import Observation
from planners.candidates import point_key

SPACE = SearchSpace(
    parameters=[
        ContinuousParameter(name="a", lower=0.0, upper=1.0),
        ContinuousParameter(name="b", lower=0.0, upper=1.0),
    ]
)
OBJECTIVES = [Objective(name="yield", direction="maximize")]  # a Python keyword, on purpose
POOL = [{"a": (i % 6) / 5, "b": (i // 6) / 4} for i in range(30)]  # a 6 x 5 grid


def truth(p: dict) -> float:
    return -((p["a"] - 0.6) ** 2) - (p["b"] - 0.25) ** 2  # best row: a = 0.6, b = 0.25


def drive(planner: object, asks: int) -> list[dict]:
    points: list[dict] = []
    for _ in range(asks):
        decision = planner.ask(1)  # type: ignore[attr-defined]
        for prop in decision.proposals:
            p = dict(prop.parameters)
            points.append(p)
            planner.tell(  # type: ignore[attr-defined]
                [Observation(parameters=p, objectives={"yield": truth(p)})]
            )
    return points


KEYS = [
    "botorch",
    pytest.param(
        "baybe",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("baybe") is None, reason="pip install -e .[benchmarks]"
        ),
    ),
    pytest.param(
        "ax",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("ax") is None, reason="pip install -e .[benchmarks]"
        ),
    ),
]


@pytest.mark.parametrize("key", KEYS)
def test_a_baseline_starts_from_the_common_rows_and_picks_unmeasured_pool_rows(key: str) -> None:
    planner = make_baseline(key, SPACE, OBJECTIVES, seed=3, pool=POOL, initial_points=3)
    points = drive(planner, 6)
    common = drive(PoolRandom(SPACE, OBJECTIVES, seed=3, pool=POOL), 3)
    assert points[:3] == common  # the same initial rows as sdlab's BO planner gets
    keys = [point_key(p) for p in points]
    assert len(set(keys)) == len(keys)  # no row twice
    rows = {point_key(p) for p in POOL}
    assert set(keys) <= rows  # pool rows only (Ax's point is snapped to one)
    # pending rows are not proposed again
    decision = planner.ask(2, pending=[POOL[0], POOL[1]])
    assert len(decision.proposals) == 2
    asked = {point_key(dict(p.parameters)) for p in decision.proposals}
    assert not asked & {point_key(POOL[0]), point_key(POOL[1]), *keys}
    assert decision.details["phase"] == key
    # replayable: the same seed and observations give the same rows
    again = make_baseline(key, SPACE, OBJECTIVES, seed=3, pool=POOL, initial_points=3)
    assert drive(again, 6) == points
    assert all(math.isfinite(truth(p)) for p in points)


def test_the_plain_botorch_baseline_works_in_the_box() -> None:
    planner = make_baseline("botorch", SPACE, OBJECTIVES, seed=1, pool=None, initial_points=4)
    points = drive(planner, 6)
    assert all(0.0 <= p["a"] <= 1.0 and 0.0 <= p["b"] <= 1.0 for p in points)
    assert max(truth(p) for p in points[4:]) > min(truth(p) for p in points[:4])
