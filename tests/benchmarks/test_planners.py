"""The planner benchmark's harness: shared initial design, scores recomputed from the truth,
the cache, exact random-search medians, hypervolume and the hook adapters."""

from __future__ import annotations

import dataclasses
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench_hooks
from benchmarks.bench_metrics import (
    best_so_far,
    experiments_to,
    hypervolume_curve,
    same_initial_design,
    summarize,
)
from benchmarks.bench_problems import ProblemUnavailableError, build
from benchmarks.bench_runs import SPECS, run_cached, run_one
from benchmarks.planner_bench import parse_seeds, quick
from sim.worlds import BraninWorld


def test_sobol_and_qlognei_share_the_initial_design_and_scores_come_from_the_truth(
    tmp_path: Path,
) -> None:
    problem = dataclasses.replace(quick(build("branin", tmp_path)), budget=5, baseline_budget=5)
    sobol, cached = run_cached(tmp_path, problem, SPECS["sobol"], 3)
    assert not cached
    bo, _ = run_cached(tmp_path, problem, SPECS["qlognei"], 3)
    assert same_initial_design(sobol, bo, 4)
    assert not same_initial_design(sobol, bo, 5)  # the 5th is BO's own choice
    assert [a["phase"] for a in bo["asks"]] == ["initial_design"] * 4 + ["bayesopt"]

    world = BraninWorld()
    for rec in (sobol, bo):
        truth = np.array([world.evaluate_true(p)["y"] for p in rec["points"]])
        np.testing.assert_allclose(best_so_far(rec), np.maximum.accumulate(truth))
        s = summarize(problem, rec["planner"], [rec])
        assert s.regret_at_n[0] == pytest.approx(-0.397887 - truth.max(), abs=1e-6)

    again, cached = run_cached(tmp_path, problem, SPECS["sobol"], 3)
    assert cached
    assert again == sobol


def test_a_changed_problem_is_not_served_from_the_cache(tmp_path: Path) -> None:
    problem = dataclasses.replace(quick(build("branin", tmp_path)), budget=3, baseline_budget=3)
    run_cached(tmp_path, problem, SPECS["random"], 0)
    longer = dataclasses.replace(problem, budget=4, baseline_budget=4)
    rec, cached = run_cached(tmp_path, longer, SPECS["random"], 0)
    assert not cached
    assert len(rec["points"]) == 4


def test_a_bo_run_made_by_other_planner_code_is_rerun_a_baseline_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import bench_runs

    problem = dataclasses.replace(quick(build("branin", tmp_path)), budget=5, baseline_budget=3)
    run_cached(tmp_path, problem, SPECS["random"], 0)
    bo, _ = run_cached(tmp_path, problem, SPECS["qlognei"], 0)
    assert bo["code"]["planner_code_sha1"] == bench_runs.planner_code_hash()
    assert run_cached(tmp_path, problem, SPECS["qlognei"], 0)[1]
    monkeypatch.setattr(bench_runs, "planner_code_hash", lambda: "other")
    assert run_cached(tmp_path, problem, SPECS["random"], 0)[1]
    rec, cached = run_cached(tmp_path, problem, SPECS["qlognei"], 0)
    assert not cached
    assert rec["code"]["planner_code_sha1"] == "other"


def test_noise_is_the_same_for_every_planner_and_scores_stay_noise_free(tmp_path: Path) -> None:
    problem = dataclasses.replace(
        quick(build("hartmann6-noisy", tmp_path)), budget=4, baseline_budget=4
    )
    a = run_one(problem, SPECS["random"], 1)
    b = run_one(problem, SPECS["sobol"], 1)
    eps_a = np.array(a["y_obs"]) - np.array(a["y_true"])
    eps_b = np.array(b["y_obs"]) - np.array(b["y_true"])
    np.testing.assert_allclose(eps_a, eps_b)
    assert np.all(np.abs(eps_a) > 0)
    np.testing.assert_allclose(best_so_far(a), np.maximum.accumulate(np.array(a["y_true"])[:, 0]))


def test_failed_experiments_never_count_as_progress(tmp_path: Path) -> None:
    problem = dataclasses.replace(
        quick(build("hartmann6-failures", tmp_path)), budget=8, baseline_budget=8
    )
    rec = run_one(problem, SPECS["random"], 0)
    ok = np.array(rec["feasible"])
    x12 = np.array([p["x1"] + p["x2"] for p in rec["points"]])
    np.testing.assert_array_equal(ok, x12 <= 1.0)
    assert 0 < ok.sum() < len(ok)  # this seed has both kinds
    truth = np.where(ok, np.array(rec["y_true"])[:, 0], -np.inf)
    expect = np.maximum.accumulate(truth)
    np.testing.assert_allclose(best_so_far(rec), np.where(np.isinf(expect), np.nan, expect))


def test_exact_random_median_on_a_pool_matches_simulation(tmp_path: Path) -> None:
    try:
        problem = build("suzuki", tmp_path)
    except ProblemUnavailableError:
        pytest.skip("olymp is not installed")
    assert problem.pool is not None
    m, k = len(problem.pool), round(problem.hit_rate * len(problem.pool))
    assert (m, k) == (247, 3)  # the top 1 %: yields 96.9, 96.0 and 95.2
    rng = np.random.default_rng(0)
    firsts = [int(np.min(rng.permutation(m)[:k])) + 1 for _ in range(20_000)]
    assert problem.random_median_n() == np.median(firsts)
    assert np.mean(firsts) == pytest.approx((m + 1) / (k + 1), rel=0.03)  # about 62


def test_pool_random_draws_the_bo_planners_initial_design(tmp_path: Path) -> None:
    try:
        problem = build("suzuki", tmp_path)
    except ProblemUnavailableError:
        pytest.skip("olymp is not installed")
    rnd = run_one(problem, SPECS["random"], 5, budget=4)
    bo = run_one(problem, SPECS["qlognei"], 5, budget=4)  # its 4 initial points, no GP
    assert same_initial_design(rnd, bo, 4)
    assert len({tuple(sorted(p.items())) for p in rnd["points"]}) == 4


def test_hypervolume_and_experiments_to_threshold() -> None:
    rec = {"y_true": [[-20.0, 0.0], [-10.0, -3.0], [-5.0, -5.0]], "feasible": [True] * 3}
    hv = hypervolume_curve(rec, [-18.0, -6.0])
    np.testing.assert_allclose(hv, [0.0, 24.0, 24.0 + 5.0 * 1.0])
    assert experiments_to(hv, 24.0) == 2
    assert math.isinf(experiments_to(hv, 30.0))


def test_parse_seeds() -> None:
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("2-4") == [2, 3, 4]
    assert parse_seeds("5,1") == [1, 5]
    with pytest.raises(ValueError, match="--seeds"):
        parse_seeds("x")


def test_hook_adapter_passes_what_run_accepts_and_renders_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, object] = {}

    def run(seeds: list[int], quick: bool) -> dict[str, object]:
        seen.update(seeds=seeds, quick=quick)
        return {
            "title": "Phase map",
            "rows": [{"planner": "al", "accuracy": 0.9123}, {"planner": "random", "n": 40}],
            "targets": [{"target": "t", "measured": "m", "baseline": "b", "met": True}],
        }

    module = types.ModuleType("benchmarks.active_learning")
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "benchmarks.active_learning", module)
    section = bench_hooks.run_hook("phase-map", seeds=[0, 1], quick=True, results=tmp_path)
    assert seen == {"seeds": [0, 1], "quick": True}
    assert section.ran
    assert section.title == "Phase map"
    assert "| planner | accuracy | n |" in section.markdown
    assert "| al | 0.9123 | - |" in section.markdown
    assert section.targets[0]["met"] is True

    monkeypatch.setitem(sys.modules, "benchmarks.sara", None)  # import fails
    missing = bench_hooks.run_hook("sara", seeds=[0], quick=False, results=tmp_path)
    assert not missing.ran
    assert "not importable" in missing.markdown


def test_the_pool_cache_key_is_the_rows_not_the_directory(tmp_path: Path) -> None:
    try:
        a = build("suzuki", tmp_path / "a")
    except ProblemUnavailableError:
        pytest.skip("olymp is not installed")
    b = build("suzuki", tmp_path / "b")
    assert a.bo_options["pool"] != b.bo_options["pool"]
    assert a.fingerprint() == b.fingerprint()


def test_phase_map_adapter_uses_the_modules_formatter_and_derives_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, object] = {}

    def run(seeds: list[int], n_max: int) -> dict[str, object]:
        calls.update(seeds=seeds, n_max=n_max)
        return {
            "planners": {
                "boundary": {"n_target_median": 15.0, "n_target": [10.0, 15.0, 20.0]},
                "random": {"n_target_median": 60.0, "n_target": [50.0, 60.0, 90.0]},
            }
        }

    module = types.ModuleType("benchmarks.active_learning")
    module.run = run  # type: ignore[attr-defined]
    module.format_table = lambda result: "N  accuracy"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "benchmarks.active_learning", module)
    section = bench_hooks.run_hook("phase-map", seeds=[0, 1, 2], quick=False, results=tmp_path)
    assert calls == {"seeds": [0, 1, 2], "n_max": 60}
    assert "```text\nN  accuracy\n```" in section.markdown
    (row,) = section.targets
    assert row["met"] is False  # 60 / 15 = 4 < 5
    assert "ratio 4.00" in row["baseline"]


def test_optional_planners_run_only_when_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import planner_bench

    def small(name: str, workdir: Path) -> object:
        problem = quick(build(name, workdir))
        return dataclasses.replace(
            problem,
            budget=2,
            baseline_budget=2,
            planners=("random",),
            optional_planners=("sobol",),
        )

    monkeypatch.setattr(planner_bench, "build", small)
    everything = planner_bench.run(["branin"], [0], results=tmp_path, verbose=False)
    assert set(everything["records"]["branin"]) == {"random"}
    named = planner_bench.run(
        ["branin"], [0], planners=["random", "sobol"], results=tmp_path, verbose=False
    )
    assert set(named["records"]["branin"]) == {"random", "sobol"}
