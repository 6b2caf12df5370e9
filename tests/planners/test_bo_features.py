"""Bayesian optimisation features (planners/bo.py): several objectives, outcome constraints,
targets, failed experiments, known noise, pools, warm starts and the local model.

Every assertion is made against noise-free truth with fixed seeds. Optimiser settings are
kept small so that the file runs in a few minutes on two cores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import torch
from botorch.acquisition import AcquisitionFunction
from botorch.models import SingleTaskGP
from botorch.utils.multi_objective.hypervolume import Hypervolume
from botorch.utils.multi_objective.pareto import is_non_dominated

from models.errors import PlannerError
from models.objectives import Objective
from models.params import (
    CategoricalParameter,
    ContinuousParameter,
    IntegerParameter,
    SearchSpace,
)
from models.records import Observation
from planners.base import Planner, make_planner
from planners.bo import MeanOfLogAcquisitions, QLogNEHVIPlanner, QLogNEIPlanner
from sim.worlds import BraninCurrinWorld

FAST = {"num_restarts": 2, "raw_samples": 64, "mc_samples": 64, "maxiter": 50}

Truth = Callable[[Mapping[str, object]], dict[str, float] | None]
"""Noise-free outcomes at a point, or ``None`` where the experiment fails."""


def branin(p: Mapping[str, object]) -> float:
    x1, x2 = float(p["x1"]), float(p["x2"])  # type: ignore[arg-type]
    t = x2 - 5.1 / (4 * math.pi**2) * x1**2 + 5 / math.pi * x1 - 6
    return t**2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10


def run(planner: Planner, truth: Truth, n: int, q: int = 1) -> list[bool]:
    """Ask, measure and tell ``n`` experiments, ``q`` at a time; returns success flags."""
    ok: list[bool] = []
    while len(ok) < n:
        decision = planner.ask(min(q, n - len(ok)))
        batch = []
        for prop in decision.proposals:
            values = truth(prop.parameters)
            ok.append(values is not None)
            batch.append(Observation(dict(prop.parameters), values or {}, values is not None))
        planner.tell(batch)
    return ok


def unit_space(*names: str) -> SearchSpace:
    return SearchSpace(parameters=[ContinuousParameter(name=n, lower=0, upper=1) for n in names])


BRANIN_SPACE = SearchSpace(
    parameters=[
        ContinuousParameter(name="x1", lower=-5.0, upper=10.0),
        ContinuousParameter(name="x2", lower=0.0, upper=15.0),
    ]
)


def test_qlognehvi_finds_more_hypervolume_than_sobol_on_branin_currin() -> None:
    world = BraninCurrinWorld()
    objectives = [
        Objective(name="branin", direction="maximize"),
        Objective(name="currin", direction="maximize"),
    ]
    space = unit_space("x1", "x2")

    def truth(p: Mapping[str, object]) -> dict[str, float]:
        return world.evaluate_true(p)  # type: ignore[arg-type]

    def hypervolume(planner: Planner) -> float:
        y = torch.tensor(
            [[truth(o.parameters)[k] for k in ("branin", "currin")] for o in planner.observations],
            dtype=torch.double,
        )
        hv = Hypervolume(torch.tensor(world.ref_point, dtype=torch.double))
        return hv.compute(y[is_non_dominated(y)])

    bo = make_planner("qlognehvi", space, objectives, seed=0, options={"initial_points": 6, **FAST})
    run(bo, truth, 18, q=2)
    sobol = make_planner("sobol", space, objectives, seed=0)
    run(sobol, truth, 18)
    hv_bo, hv_sobol = hypervolume(bo), hypervolume(sobol)
    print(
        f"hypervolume after 18: qlognehvi {hv_bo:.2f}, sobol {hv_sobol:.2f}, max {world.max_hv:.2f}"
    )
    assert hv_bo > hv_sobol
    decision = bo.ask(2)
    assert decision.details["acquisition"] == "qLogNoisyExpectedHypervolumeImprovement"
    assert decision.details["reference_point_inferred"] is True
    ref = decision.details["reference_point"]
    front = decision.details["pareto_front"]
    # the inferred reference point is dominated by every point of the observed front
    assert all(f[0] > ref[0] and f[1] > ref[1] for f in front)
    assert len({tuple(p.parameters.items()) for p in decision.proposals}) == 2


def test_a_given_reference_point_is_used_in_utility_units() -> None:
    objectives = [
        Objective(name="a", direction="maximize", reference=0.1),
        Objective(name="b", direction="minimize", reference=2.0),
    ]
    planner = QLogNEHVIPlanner(unit_space("x"), objectives, seed=0, initial_points=3, **FAST)
    run(planner, lambda p: {"a": float(p["x"]), "b": 1 + float(p["x"]) ** 2}, 4)  # type: ignore[arg-type]
    details = planner.ask(1).details
    assert details["reference_point"] == pytest.approx([0.1, -2.0])
    assert details["reference_point_inferred"] is False


def test_outcome_constraint_steers_proposals_into_the_feasible_region() -> None:
    objectives = [
        Objective(name="y", direction="minimize"),
        Objective(name="x1_copy", kind="constraint", upper=0.0),
    ]
    planner = make_planner(
        "bo", BRANIN_SPACE, objectives, seed=0, options={"initial_points": 6, **FAST}
    )

    def truth(p: Mapping[str, object]) -> dict[str, float]:
        return {"y": branin(p), "x1_copy": float(p["x1"])}  # type: ignore[arg-type]

    run(planner, truth, 20)
    later = planner.observations[8:]
    satisfied = [float(o.parameters["x1"]) <= 0.0 for o in later]
    best = min(branin(o.parameters) for o in planner.observations if float(o.parameters["x1"]) <= 0)
    print(f"constraint met by {sum(satisfied)}/{len(satisfied)}; best feasible {best:.3f}")
    assert sum(satisfied) >= 0.8 * len(satisfied)
    assert best < 0.397887 + 1.0  # the feasible optimum is at (-pi, 12.275)
    assert planner.ask(1).details["n_outcome_constraints"] == 1


def test_target_value_is_approached() -> None:
    objectives = [Objective(name="gap", target=1.4)]
    assert objectives[0].direction == "minimize"
    planner = QLogNEIPlanner(unit_space("x1", "x2"), objectives, seed=0, initial_points=4, **FAST)

    def gap(p: Mapping[str, object]) -> float:
        return 0.5 + 2.0 * float(p["x1"]) ** 2 + 0.5 * float(p["x2"])  # type: ignore[arg-type]

    run(planner, lambda p: {"gap": gap(p)}, 12)
    distances = [abs(gap(o.parameters) - 1.4) for o in planner.observations]
    print(f"closest to the target after 12: {min(distances):.4f}")
    assert min(distances) < 0.02
    best = planner.ask(1).details["best_observed"]
    assert abs(best - 1.4) == pytest.approx(min(distances))


def failing_branin(p: Mapping[str, object]) -> dict[str, float] | None:
    """Branin, except that experiments in the lower right of the box fail (the two optima
    there are unreachable; the one at (-pi, 12.275) is not)."""
    u1, u2 = (float(p["x1"]) + 5) / 15, float(p["x2"]) / 15  # type: ignore[arg-type]
    if u2 < 0.35 and u1 > 0.3:
        return None
    return {"y": branin(p)}


def test_failed_experiments_teach_the_planner_where_not_to_go() -> None:
    objectives = [Objective(name="y", direction="minimize")]
    opts = {"initial_points": 6, **FAST}
    planner = make_planner("qlognei", BRANIN_SPACE, objectives, seed=0, options=opts)
    ok = run(planner, failing_branin, 35)
    rate = ok[10:].count(False) / len(ok[10:])
    best = min(branin(o.parameters) for o in planner.observations if o.feasible)
    decision = planner.ask(1)
    assert decision.details["feasibility_model"] is not None
    assert 0.0 <= decision.details["success_probability"][0] <= 1.0

    blind = make_planner(
        "qlognei",
        BRANIN_SPACE,
        objectives,
        seed=0,
        options={**opts, "feasibility": False, "impute_failures": False},
    )
    blind_ok = run(blind, failing_branin, 20)
    blind_rate = blind_ok[10:].count(False) / len(blind_ok[10:])
    print(f"infeasible after the first 10: {rate:.0%} (without failure modelling {blind_rate:.0%})")
    # One seed decides 25 proposals, so a single unlucky one moves the rate by 4 points: the
    # issue's "< 10 %" is a median over seeds, which benchmarks/planner_bench.py measures
    # (hartmann6-failures: 1.8 % over 20 seeds); here the modelled rate must be a small
    # fraction of the blind one.
    assert rate <= 0.15
    assert blind_rate > 0.3
    assert rate < blind_rate / 4
    assert best < 0.397887 + 1.0


def test_reported_uncertainties_make_the_noise_fixed() -> None:
    objectives = [Objective(name="y", direction="maximize")]
    space = unit_space("x")
    planner = QLogNEIPlanner(space, objectives, seed=0, initial_points=3, **FAST)
    planner.tell(
        [
            Observation({"x": x}, {"y": math.sin(6 * x)}, uncertainties={"y": 0.05})
            for x in (0.1, 0.4, 0.7, 0.9)
        ]
    )
    details = planner.ask(1).details
    assert details["noise"] == "fixed"
    hp = details["hyperparameters"]  # noise variances are in standardised units
    assert hp["noise"] == pytest.approx([0.05**2 / hp["outcome_std"][0] ** 2], rel=1e-6)
    planner.tell([Observation({"x": 0.5}, {"y": math.sin(3.0)}, uncertainties={"y": 0.0})])
    assert planner.ask(1).details["noise"] == "inferred"  # zero counts as not reported
    planner.tell([Observation({"x": 0.6}, {"y": math.sin(3.6)})])  # no uncertainty
    assert planner.ask(1).details["noise"] == "inferred"


def test_extra_noise_takes_reported_uncertainties_as_a_floor_and_the_priors_are_recorded() -> None:
    objectives = [Objective(name="y", direction="maximize")]
    space = unit_space("x")
    told = [
        Observation({"x": x}, {"y": math.sin(6 * x)}, uncertainties={"y": 0.05})
        for x in (0.1, 0.4, 0.7, 0.9)
    ]
    plain = QLogNEIPlanner(space, objectives, seed=0, initial_points=3, **FAST)
    extra = QLogNEIPlanner(space, objectives, seed=0, initial_points=3, extra_noise=True, **FAST)
    for planner in (plain, extra):
        planner.tell(told)
    a, b = plain.ask(1).details, extra.ask(1).details
    assert (a["noise"], b["noise"]) == ("fixed", "fixed+inferred")
    assert a["gp_priors"] == b["gp_priors"] == plain.options.gp_priors  # the default
    reported = 0.05**2 / b["hyperparameters"]["outcome_std"][0] ** 2
    assert b["hyperparameters"]["noise"][0] == pytest.approx(
        reported + b["hyperparameters"]["extra_noise"][0], rel=1e-6
    )
    assert b["hyperparameters"]["extra_noise"][0] >= 1e-4  # BoTorch's least inferred noise
    for priors in ("botorch", "gamma"):
        other = QLogNEIPlanner(
            space, objectives, seed=0, initial_points=3, gp_priors=priors, **FAST
        )
        other.tell(told)
        assert other.ask(1).details["gp_priors"] == priors


def test_pool_proposals_are_unmeasured_rows(tmp_path: Path) -> None:
    pool = tmp_path / "pool.csv"
    xs = [i / 19 for i in range(20)]
    pool.write_text("x,label\n" + "".join(f"{x!r},row{i}\n" for i, x in enumerate(xs)))
    objectives = [Objective(name="y", direction="maximize")]
    planner = QLogNEIPlanner(
        unit_space("x"), objectives, seed=0, initial_points=3, pool=str(pool), **FAST
    )

    def truth(p: Mapping[str, object]) -> dict[str, float]:
        return {"y": -((float(p["x"]) - 0.62) ** 2)}  # type: ignore[arg-type]

    run(planner, truth, 6)
    measured = [o.parameters["x"] for o in planner.observations]
    assert set(measured) <= set(xs)
    assert len(set(measured)) == 6
    free = next(x for x in xs if x not in measured)
    pending = [{"x": free}]
    decision = planner.ask(3, pending=pending)
    assert decision.details["search"] == "pool"
    assert decision.details["n_candidates"] == 20 - 6 - 1
    chosen = [p.parameters["x"] for p in decision.proposals]
    assert len(set(chosen)) == 3
    assert not set(chosen) & (set(measured) | {free})
    assert set(chosen) <= set(xs)
    with pytest.raises(PlannerError, match="candidates"):
        planner.ask(14, pending=pending)


def test_pools_get_log_ei_on_the_range_their_rows_span(tmp_path: Path) -> None:
    """On a pool, the GP is normalised to the rows' range (a constant column keeps the unit
    box) and one objective gets qLogEI with the best posterior mean as incumbent; the
    ``acquisition`` option brings qLogNEI back."""
    pool = tmp_path / "pool.csv"
    xs = [0.2 + 0.5 * i / 15 for i in range(16)]
    pool.write_text("x1,x2\n" + "".join(f"{x!r},0.5\n" for x in xs))
    objectives = [Objective(name="y", direction="maximize")]

    def truth(p: Mapping[str, object]) -> dict[str, float]:
        return {"y": 5.0 - 20.0 * (float(p["x1"]) - 0.55) ** 2}  # type: ignore[arg-type]

    planner = QLogNEIPlanner(
        unit_space("x1", "x2"), objectives, seed=0, initial_points=3, pool=str(pool), **FAST
    )
    assert planner._input_bounds().tolist() == [[0.2, 0.0], [0.7, 1.0]]
    run(planner, truth, 5)
    details = planner.ask(1).details
    assert details["acquisition"] == "qLogExpectedImprovement"
    values = [o.objectives["y"] for o in planner.observations]
    # the incumbent is the GP's mean at the best row, in the objective's units (values span
    # 2.5-5, so a standardised, a prior or a worst-row incumbent is far from it)
    assert details["best_f"] == pytest.approx(max(values), abs=0.05 * (max(values) - min(values)))
    other = QLogNEIPlanner(
        unit_space("x1", "x2"),
        objectives,
        seed=0,
        initial_points=3,
        pool=str(pool),
        acquisition="qlognei",
        **FAST,
    )
    other.tell(planner.observations)
    assert other.ask(1).details["acquisition"] == "qLogNoisyExpectedImprovement"
    plain = QLogNEIPlanner(unit_space("x1", "x2"), objectives, seed=0, **FAST)
    assert plain._input_bounds().tolist() == [[0.0, 0.0], [1.0, 1.0]]


def test_small_discrete_spaces_are_enumerated() -> None:
    space = SearchSpace(
        parameters=[
            IntegerParameter(name="a", lower=0, upper=6),
            IntegerParameter(name="b", lower=0, upper=6),
        ]
    )
    planner = QLogNEIPlanner(
        space, [Objective(name="y", direction="maximize")], seed=0, initial_points=4, **FAST
    )
    run(planner, lambda p: {"y": -((int(p["a"]) - 4) ** 2) - (int(p["b"]) - 1) ** 2}, 12)  # type: ignore[call-overload]
    decision = planner.ask(2)
    assert decision.details["search"] == "enumerated"
    assert decision.details["n_repeats"] == 0
    assert any(o.parameters == {"a": 4, "b": 1} for o in planner.observations)


def test_warm_start_starts_from_the_anchor_fit() -> None:
    objectives = [Objective(name="y", direction="maximize")]
    planner = QLogNEIPlanner(
        unit_space("x1", "x2"),
        objectives,
        seed=0,
        initial_points=4,
        warm_start=True,
        refit_every=5,
        warm_start_min_n=0,
        **FAST,
    )
    truth = lambda p: {"y": -(float(p["x1"]) ** 2) - float(p["x2"])}  # type: ignore[arg-type]  # noqa: E731
    run(planner, truth, 4)  # the initial design: no fit yet
    first = planner.ask(1)
    run(planner, truth, 1)
    second = planner.ask(1)
    assert first.details["warm_started"] is False  # no anchor of 5 observations yet
    assert second.details["warm_started"] is True
    assert second.details["warm_start_anchor"] == 5


def test_many_observations_switch_to_a_local_model() -> None:
    objectives = [Objective(name="y", direction="maximize")]
    planner = QLogNEIPlanner(
        unit_space("x1", "x2"), objectives, seed=0, initial_points=4, max_exact=10, **FAST
    )
    grid = [(i / 4, j / 4) for i in range(5) for j in range(5)]
    planner.tell(
        [
            Observation({"x1": a, "x2": b}, {"y": -((a - 0.8) ** 2) - (b - 0.3) ** 2})
            for a, b in grid
        ]
    )
    decision = planner.ask(2)
    assert decision.details["local_model"] is True
    assert decision.details["n_model"] == 10
    # proposals stay inside the box of the ten observations nearest the incumbent (0.75, 0.25)
    for p in decision.proposals:
        assert abs(float(p.parameters["x1"]) - 0.75) <= 0.5  # type: ignore[arg-type]
        assert abs(float(p.parameters["x2"]) - 0.25) <= 0.5  # type: ignore[arg-type]


def test_failures_in_a_pool_weight_batch_proposals(tmp_path: Path) -> None:
    pool = tmp_path / "pool.csv"
    grid = [(i / 7, j / 7) for i in range(8) for j in range(8)]
    pool.write_text("x1,x2\n" + "".join(f"{a!r},{b!r}\n" for a, b in grid))
    planner = QLogNEIPlanner(
        unit_space("x1", "x2"),
        [Objective(name="y", direction="maximize")],
        seed=0,
        initial_points=8,
        pool=str(pool),
        **FAST,
    )

    def truth(p: Mapping[str, object]) -> dict[str, float] | None:
        x1, x2 = float(p["x1"]), float(p["x2"])  # type: ignore[arg-type]
        return None if x1 > 0.5 else {"y": x1 + x2}

    run(planner, truth, 12, q=3)
    decision = planner.ask(3)
    assert decision.details["search"] == "pool"
    assert decision.details["feasibility_model"] is not None
    probabilities = decision.details["success_probability"]
    assert len(probabilities) == 3
    chosen = [(p.parameters["x1"], p.parameters["x2"]) for p in decision.proposals]
    assert len(set(chosen)) == 3
    # the barrier keeps proposals where success is at least as likely as min_feasibility
    assert min(probabilities) >= 0.5


def test_few_categorical_combinations_are_optimised_one_by_one() -> None:
    space = SearchSpace(
        parameters=[
            ContinuousParameter(name="x", lower=0.0, upper=1.0),
            CategoricalParameter(name="gas", choices=["air", "argon", "nitrogen"]),
        ]
    )
    planner = QLogNEIPlanner(
        space, [Objective(name="y", direction="maximize")], seed=0, initial_points=6, **FAST
    )

    def truth(p: Mapping[str, object]) -> dict[str, float]:
        bonus = {"air": 0.0, "argon": 0.3, "nitrogen": 1.0}[str(p["gas"])]
        return {"y": bonus - (float(p["x"]) - 0.3) ** 2}  # type: ignore[arg-type]

    run(planner, truth, 10)
    decision = planner.ask(2)
    assert decision.details["categorical_search"] == "enumerated (3 combinations)"
    best = max(planner.observations, key=lambda o: o.objectives["y"])
    assert best.parameters["gas"] == "nitrogen"
    assert abs(float(best.parameters["x"]) - 0.3) < 0.1  # type: ignore[arg-type]
    coarse = QLogNEIPlanner(
        space,
        [Objective(name="y", direction="maximize")],
        seed=0,
        initial_points=6,
        max_categorical_combinations=2,
        **FAST,
    )
    coarse.tell(list(planner.observations))
    assert coarse.ask(1).details["categorical_search"] == "relaxed"


class _LinearLogAcquisition(AcquisitionFunction):
    """A stand-in log acquisition: ``w . x`` summed over the q points (``b x q x d -> b``)."""

    def __init__(self, model: SingleTaskGP, w: torch.Tensor) -> None:
        super().__init__(model=model)
        self.w = w

    def forward(self, X: torch.Tensor) -> torch.Tensor:  # noqa: N803
        return (X @ self.w).sum(dim=-1)


def test_mean_of_log_acquisitions_is_the_log_of_the_mean_and_passes_pending_on() -> None:
    x = torch.rand(4, 2, dtype=torch.double)
    model = SingleTaskGP(x, x.sum(-1, keepdim=True))
    a = _LinearLogAcquisition(model, torch.tensor([1.0, -2.0], dtype=torch.double))
    b = _LinearLogAcquisition(model, torch.tensor([-3.0, 0.5], dtype=torch.double))
    mixed = MeanOfLogAcquisitions([a, b])
    x_test = torch.rand(5, 1, 2, dtype=torch.double)
    expected = torch.log((a(x_test).exp() + b(x_test).exp()) / 2)
    assert torch.allclose(mixed(x_test), expected)
    pending = torch.rand(2, 2, dtype=torch.double)
    mixed.set_X_pending(pending)
    for acq in (a, b):
        assert acq.X_pending is not None
        assert torch.equal(acq.X_pending, pending)


def test_mixture_priors_average_the_acquisition_of_both_gps() -> None:
    objectives = [Objective(name="y", direction="maximize")]
    space = unit_space("x", "z")
    told = [
        Observation({"x": x, "z": z}, {"y": math.sin(6 * x) + z})
        for x, z in ((0.1, 0.2), (0.4, 0.9), (0.7, 0.5), (0.9, 0.1), (0.3, 0.6))
    ]
    scores = {}
    for priors in ("gamma", "botorch", "mixture"):
        planner = QLogNEIPlanner(
            space, objectives, seed=0, initial_points=3, gp_priors=priors, **FAST
        )
        planner.tell(told)
        decision = planner.ask(1)
        assert decision.details["gp_priors"] == priors
        scores[priors] = decision
    mixed = scores["mixture"]
    assert mixed.details["gp_priors_used"] == "gamma"  # its hyperparameters are recorded
    assert math.isfinite(mixed.candidate_scores[0])
    # the two GPs disagree, so the mixture's proposal is scored unlike either one's
    assert mixed.candidate_scores[0] not in (
        scores["gamma"].candidate_scores[0],
        scores["botorch"].candidate_scores[0],
    )
