"""Tests of the planner contract and registry (planners/base.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from models.errors import InvalidCampaignError, ParameterLimitError, PlannerError, RegistryError
from models.objectives import Objective
from models.params import ParamValue, SearchSpace
from models.records import Decision, Observation, Proposal
from models.registry import Registry
from planners import base
from planners.base import Planner, PlannerOptions, make_planner, planner_names, register_planner


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Registry[Planner]:
    """A copy of the registry that the test may change freely."""
    base.PLANNERS.load_builtins()
    registry = base.PLANNERS.copy()
    monkeypatch.setattr(base, "PLANNERS", registry)
    return registry


class _Fixed(Planner):
    """Proposes the lower corner; used to exercise the base class."""

    class Options(PlannerOptions):
        width: int = 1

    def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]] = ()) -> Decision:
        self.check_ask(n, pending)
        point = {p.name: p.lower for p in self.space.parameters}  # type: ignore[union-attr]
        return Decision(
            proposals=[Proposal(parameters=point)] * n,
            planner=self.name,
            version=self.version,
            seed=self.seed,
            n_train=len(self.observations),
        )


def test_builtin_planners_are_registered() -> None:
    names = planner_names()
    assert {"random", "sobol", "qlognei"} <= set(names)
    assert names == sorted(names)


def test_register_duplicate_name_raises(isolated_registry: Registry[Planner]) -> None:
    with pytest.raises(RegistryError, match="'random' is already registered"):
        register_planner("random")(_Fixed)
    register_planner("fixed-test")(_Fixed)
    assert isolated_registry.get("fixed-test") is _Fixed
    assert _Fixed.name == "fixed-test"
    with pytest.raises(RegistryError, match="already registered"):

        @register_planner("fixed-test")
        class _Other(_Fixed):
            pass


def test_register_rejects_non_planner(isolated_registry: Registry[Planner]) -> None:
    with pytest.raises(TypeError):
        register_planner("not-a-planner")(int)  # type: ignore[type-var]
    assert "not-a-planner" not in isolated_registry


def test_unknown_planner_lists_known_names(
    branin_space: SearchSpace, minimize_y: list[Objective]
) -> None:
    with pytest.raises(RegistryError) as info:
        make_planner("gradient-descent", branin_space, minimize_y)
    text = str(info.value)
    assert "gradient-descent" in text
    for name in ("qlognei", "random", "sobol"):
        assert name in text
    assert isinstance(info.value, KeyError)


def test_unknown_option_names_key_path(
    branin_space: SearchSpace, minimize_y: list[Objective]
) -> None:
    with pytest.raises(InvalidCampaignError) as info:
        make_planner("random", branin_space, minimize_y, options={"batch": 3})
    assert info.value.by_key() == {"planner.options.batch": "unknown option"}
    assert "planner.options.batch" in str(info.value)


def test_invalid_option_values_name_key_paths(
    branin_space: SearchSpace, minimize_y: list[Objective]
) -> None:
    with pytest.raises(InvalidCampaignError) as info:
        make_planner(
            "qlognei",
            branin_space,
            minimize_y,
            options={"num_restarts": "many", "raw_samples": 0},
        )
    paths = info.value.key_paths()
    assert paths == ["planner.options.num_restarts", "planner.options.raw_samples"]
    assert info.value.source is None


def test_direct_construction_validates_options(
    isolated_registry: Registry[Planner],
    branin_space: SearchSpace,
    minimize_y: list[Objective],
) -> None:
    register_planner("fixed-test")(_Fixed)
    planner = make_planner("fixed-test", branin_space, minimize_y, seed=4, options={"width": 3})
    assert isinstance(planner.options, _Fixed.Options)
    assert planner.options.width == 3
    with pytest.raises(InvalidCampaignError, match=r"planner\.options\.width"):
        _Fixed(branin_space, minimize_y, width="wide")


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_bad_seed_raises(
    branin_space: SearchSpace, minimize_y: list[Objective], seed: object
) -> None:
    with pytest.raises(PlannerError, match="seed"):
        _Fixed(branin_space, minimize_y, seed=seed)  # type: ignore[arg-type]


def test_objectives_must_be_present_and_distinct(branin_space: SearchSpace) -> None:
    with pytest.raises(PlannerError, match="at least one objective"):
        _Fixed(branin_space, [])
    y = Objective(name="y", direction="maximize")
    with pytest.raises(PlannerError, match="distinct"):
        _Fixed(branin_space, [y, y])


def test_tell_accumulates_and_normalises(
    branin_space: SearchSpace, minimize_y: list[Objective]
) -> None:
    planner = _Fixed(branin_space, minimize_y)
    planner.tell([Observation(parameters={"x2": 1, "x1": 2}, objectives={"y": 3.0})])
    planner.tell([Observation(parameters={"x1": 0.0, "x2": 0.0}, objectives={}, feasible=False)])
    obs = planner.observations
    assert len(obs) == 2
    assert list(obs[0].parameters) == ["x1", "x2"]
    assert obs[0].parameters["x1"] == 2.0
    assert isinstance(obs[0].parameters["x1"], float)
    assert not obs[1].feasible


def test_tell_rejects_points_outside_space(
    branin_space: SearchSpace, minimize_y: list[Objective]
) -> None:
    planner = _Fixed(branin_space, minimize_y)
    bad = Observation(parameters={"x1": 11.0, "x2": 1.0}, objectives={"y": 1.0}, experiment_id=7)
    with pytest.raises(PlannerError, match="experiment 7"):
        planner.tell([bad])
    assert planner.observations == ()


def test_tell_skips_infeasible_points_outside_space(
    branin_space: SearchSpace, minimize_y: list[Objective]
) -> None:
    """The safety gate tells the planner about refused proposals, wherever they were."""
    planner = _Fixed(branin_space, minimize_y)
    refused = Observation(parameters={"x1": 11.0, "x2": 1.0}, objectives={}, feasible=False)
    inside = Observation(parameters={"x1": 1.0, "x2": 1.0}, objectives={}, feasible=False)
    planner.tell([refused, inside])
    assert [o.parameters["x1"] for o in planner.observations] == [1.0]


def test_check_ask(branin_space: SearchSpace, minimize_y: list[Objective]) -> None:
    planner = _Fixed(branin_space, minimize_y)
    with pytest.raises(PlannerError, match="n >= 1"):
        planner.ask(0)
    with pytest.raises(ParameterLimitError):
        planner.ask(1, pending=[{"x1": 0.0}])


def test_decision_seed_depends_on_state_and_repeats(
    branin_space: SearchSpace, minimize_y: list[Objective]
) -> None:
    a = _Fixed(branin_space, minimize_y, seed=1)
    b = _Fixed(branin_space, minimize_y, seed=1)
    c = _Fixed(branin_space, minimize_y, seed=2)
    s0, r0 = a.decision_seed(0)
    assert (s0, r0) == b.decision_seed(0)
    assert r0 == 0
    assert c.decision_seed(0)[0] != s0
    s_again, r_again = a.decision_seed(0)
    assert r_again == 1
    assert s_again != s0
    assert a.decision_seed(1)[0] not in (s0, s_again)
    assert 0 <= s0 < 2**63


def test_tell_keeps_every_scalar_measurement_of_an_observation(
    branin_space: SearchSpace, minimize_y: list[Objective]
) -> None:
    planner = _Fixed(branin_space, minimize_y)
    point = {p.name: p.lower for p in branin_space.parameters}  # type: ignore[union-attr]
    measured = {"y": 3.0, "wf_SrTiO3": 0.25}
    planner.tell([Observation(point, {"y": 3.0}, True, 7, measurements=measured)])
    planner.tell([Observation(point, {}, False, 8, measurements={"wf_SrO": 1.0})])
    assert [o.measurements for o in planner.observations] == [measured, {"wf_SrO": 1.0}]
