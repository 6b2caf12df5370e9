"""Multi-fidelity worlds (sim/multifidelity.py): the truth at each fidelity against BoTorch's
augmented test functions, the target-fidelity truth, the optimum, and the simulated
station's declared cost."""

from __future__ import annotations

import math

import pytest
import torch
from botorch.test_functions import AugmentedBranin, AugmentedHartmann

from models.errors import InvalidCampaignError, ParameterLimitError
from models.instrument_spec import SimulatedInstrumentSpec
from sim.drivers import make_driver
from sim.multifidelity import FIDELITY, AugmentedBraninWorld
from sim.worlds import get_world


@pytest.mark.parametrize("fidelity", [0.0, 0.3, 1.0])
def test_augmented_branin_is_botorchs_function_negated_at_every_fidelity(fidelity: float) -> None:
    world = get_world("augmented-branin")
    ref = AugmentedBranin()
    for x1, x2 in [(-5.0, 0.0), (math.pi, 2.275), (2.0, 7.5), (10.0, 15.0)]:
        expected = -float(ref(torch.tensor([[x1, x2, fidelity]], dtype=torch.double))[0])
        got = world.evaluate_true({"x1": x1, "x2": x2, FIDELITY: fidelity})["y"]
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_at_the_target_fidelity_augmented_branin_is_branin_and_below_it_is_biased() -> None:
    mf, branin = get_world("augmented-branin"), get_world("branin")
    for x1, x2 in [(-math.pi, 12.275), (math.pi, 2.275), (9.42478, 2.475), (0.0, 5.0)]:
        target = mf.evaluate_true({"x1": x1, "x2": x2, FIDELITY: 1.0})["y"]
        assert target == pytest.approx(branin.evaluate_true({"x1": x1, "x2": x2})["y"], abs=1e-9)
        assert mf.evaluate_target({"x1": x1, "x2": x2, FIDELITY: 0.0})["y"] == target
        assert mf.evaluate_target({"x1": x1, "x2": x2})["y"] == target
    # at fidelity 0 the optimum (pi, 2.275) of the truth is no longer optimal: screening lies
    low = mf.evaluate_true({"x1": math.pi, "x2": 2.275, FIDELITY: 0.0})["y"]
    assert low < -0.397887 - 0.5
    opt = mf.optimum
    assert opt is not None
    assert opt.value == pytest.approx(-0.397887)
    for p in opt.optimizers:
        assert p[FIDELITY] == 1.0
        assert mf.evaluate_true(p)["y"] == pytest.approx(-0.397887, abs=1e-5)


def test_augmented_hartmann6_at_each_fidelity() -> None:
    world = get_world("augmented-hartmann6")
    ref = AugmentedHartmann()
    assert world.parameter_names == ["x1", "x2", "x3", "x4", "x5", "x6", FIDELITY]
    x = [0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573]
    for s in (0.0, 0.5, 1.0):
        point = {**{f"x{i + 1}": v for i, v in enumerate(x)}, FIDELITY: s}
        expected = -float(ref(torch.tensor([[*x, s]], dtype=torch.double))[0])
        assert world.evaluate_true(point)["y"] == pytest.approx(expected, rel=1e-12)
    assert world.optimal_value == pytest.approx(3.32237)


def test_bad_inputs_and_options_name_the_field() -> None:
    world = AugmentedBraninWorld()
    with pytest.raises(ParameterLimitError, match=FIDELITY):
        world.evaluate_true({"x1": 0.0, "x2": 0.0})
    with pytest.raises(InvalidCampaignError) as info:
        get_world("augmented-branin", limits={FIDELITY: {"minimum": -1}})
    assert info.value.problems[0].key == f"options.limits.{FIDELITY}"


def test_the_station_declares_the_cost_it_is_given() -> None:
    spec = SimulatedInstrumentSpec(world="augmented-branin", cost=1.0, cost_per={FIDELITY: 9.0})
    action = make_driver("s", spec).actions()[0]
    assert action.cost == 1.0
    assert action.cost_per == {FIDELITY: 9.0}
    assert action.cost_of({"x1": 0.0, "x2": 0.0, FIDELITY: 0.5}) == pytest.approx(5.5)
    bad = SimulatedInstrumentSpec(world="augmented-branin", cost_per={"speed": 1.0})
    with pytest.raises(InvalidCampaignError) as info:
        make_driver("s", bad)
    assert info.value.problems[0].key == "cost_per.speed"
