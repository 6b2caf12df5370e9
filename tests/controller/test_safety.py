"""The safety gate (controller/safety.py): nothing outside declared limits is let through."""

from __future__ import annotations

import pytest

from controller.safety import SafetyGate
from instruments.driver import ActionSpec, InstrumentDescription, OutputSpec, ParameterLimit
from models.campaign import CampaignSpec
from models.errors import InvalidCampaignError, ParameterLimitError


def spec(**overrides: object) -> CampaignSpec:
    data: dict[str, object] = {
        "campaign": {"name": "gate"},
        "parameters": [
            {"name": "temperature_c", "type": "continuous", "lower": 20, "upper": 1200},
            {"name": "time_s", "type": "continuous", "lower": 1, "upper": 100},
        ],
        "objectives": [{"name": "y", "direction": "maximize"}],
        "workflow": [
            {"kind": "furnace", "action": "anneal", "fixed": {"ramp_c_per_min": 10}},
            {"kind": "meter", "action": "measure", "parameters": []},
        ],
        "instruments": [
            {"name": "f1", "kind": "furnace", "address": "tcp://127.0.0.1:1"},
            {"name": "f2", "kind": "furnace", "address": "tcp://127.0.0.1:2"},
            {"name": "m1", "kind": "meter", "address": "tcp://127.0.0.1:3"},
        ],
        "planner": {"name": "random"},
        "budget": {"max_experiments": 3},
    }
    data.update(overrides)
    return CampaignSpec.model_validate(data)


def furnace(name: str, max_c: float, max_ramp: float = 20) -> InstrumentDescription:
    return InstrumentDescription(
        name=name,
        driver="test",
        driver_version="1",
        actions=[
            ActionSpec(
                name="anneal",
                parameters=[
                    ParameterLimit(name="temperature_c", minimum=20, maximum=max_c),
                    ParameterLimit(name="time_s", minimum=1, maximum=100),
                    ParameterLimit(name="ramp_c_per_min", minimum=1, maximum=max_ramp),
                ],
            )
        ],
    )


METER = InstrumentDescription(
    name="m1",
    driver="test",
    driver_version="1",
    actions=[ActionSpec(name="measure", outputs=[OutputSpec(name="y")])],
)


def test_a_proposal_must_fit_every_instrument_that_could_run_it() -> None:
    gate = SafetyGate(spec(), {"f1": furnace("f1", 1200), "f2": furnace("f2", 900), "m1": METER})

    assert gate.check_proposal({"temperature_c": 850, "time_s": 10}) == {
        "temperature_c": 850.0,
        "time_s": 10.0,
    }
    with pytest.raises(ParameterLimitError) as info:
        gate.check_proposal({"temperature_c": 950, "time_s": 10})
    assert (info.value.parameter, info.value.instrument) == ("temperature_c", "f2")
    with pytest.raises(ParameterLimitError, match="bounds"):
        gate.check_proposal({"temperature_c": 1300, "time_s": 10})  # the campaign's own


def test_dispatch_checks_the_exact_parameters_for_the_chosen_instrument() -> None:
    gate = SafetyGate(spec(), {"f1": furnace("f1", 1200), "m1": METER})
    params = gate.step_parameters(0, {"temperature_c": 1000.0, "time_s": 5.0})
    assert params == {"temperature_c": 1000.0, "time_s": 5.0, "ramp_c_per_min": 10}
    gate.check_dispatch("f1", 0, params)
    gate.sent("f1", 0, params, acknowledged=True)
    assert gate.step_parameters(1, {"temperature_c": 1000.0, "time_s": 5.0}) == {}
    with pytest.raises(ParameterLimitError) as info:
        gate.check_dispatch("f1", 0, {**params, "ramp_c_per_min": 50})
    assert info.value.parameter == "ramp_c_per_min"
    with pytest.raises(ParameterLimitError, match="not offered"):
        gate.check_dispatch("m1", 0, params)


def test_fixed_settings_outside_limits_refuse_every_proposal() -> None:
    gate = SafetyGate(spec(), {"f1": furnace("f1", 1200, max_ramp=5), "m1": METER})
    with pytest.raises(ParameterLimitError, match="ramp_c_per_min"):
        gate.check_proposal({"temperature_c": 100, "time_s": 10})


def test_instruments_that_cannot_run_the_workflow_are_a_campaign_error() -> None:
    no_anneal = InstrumentDescription(name="f1", driver="t", driver_version="1", actions=[])
    with pytest.raises(InvalidCampaignError) as info:
        SafetyGate(spec(), {"f1": no_anneal, "m1": METER})
    assert info.value.by_key()["workflow[0].action"].startswith("instrument 'f1' has no")
    with pytest.raises(InvalidCampaignError) as info:
        SafetyGate(
            spec(objectives=[{"name": "z", "direction": "minimize"}]),
            {"f1": furnace("f1", 1200), "m1": METER},
        )
    assert "objectives[0].name" in info.value.by_key()


def test_a_required_parameter_the_search_space_lacks_refuses_the_campaign() -> None:
    # The action needs time_s; a campaign without it would have every proposal refused.
    only_temperature = [{"name": "temperature_c", "type": "continuous", "lower": 20, "upper": 1200}]
    with pytest.raises(InvalidCampaignError) as info:
        SafetyGate(spec(parameters=only_temperature), {"f1": furnace("f1", 1200), "m1": METER})
    problems = {p.path: p.message for p in info.value.problems}
    assert list(problems) == [("workflow", 0)]
    assert "requires parameter 'time_s'" in problems[("workflow", 0)]
    assert "instrument 'f1'" in problems[("workflow", 0)]
    assert "workflow[0]: " in str(info.value)
    # given as a fixed value instead, it runs
    fixed = {"kind": "furnace", "action": "anneal", "fixed": {"ramp_c_per_min": 10, "time_s": 5}}
    gate = SafetyGate(
        spec(parameters=only_temperature, workflow=[fixed, spec().workflow[1].model_dump()]),
        {"f1": furnace("f1", 1200), "m1": METER},
    )
    assert gate.check_proposal({"temperature_c": 500}) == {"temperature_c": 500.0}


def test_a_step_that_sends_what_the_action_does_not_take_or_omits_what_it_needs() -> None:
    steps = [
        {
            "kind": "furnace",
            "action": "anneal",
            "parameters": ["temperature_c"],
            "fixed": {"ramp_c_per_min": 10, "colour": "red"},
        },
        {"kind": "meter", "action": "measure", "parameters": ["time_s"]},
    ]
    with pytest.raises(InvalidCampaignError) as info:
        SafetyGate(spec(workflow=steps), {"f1": furnace("f1", 1200), "m1": METER})
    found = info.value.by_key()
    assert set(found) == {
        "workflow[0].fixed.colour",
        "workflow[0].parameters",
        "workflow[1].parameters[0]",
    }
    assert "has no parameter 'colour'" in found["workflow[0].fixed.colour"]
    assert (
        "requires parameter 'time_s', which the step does not send"
        in found["workflow[0].parameters"]
    )
    assert (
        "has no parameter 'time_s' (it takes no parameters)" in found["workflow[1].parameters[0]"]
    )


def test_optional_parameters_may_be_left_out() -> None:
    optional = InstrumentDescription(
        name="f1",
        driver="test",
        driver_version="1",
        actions=[
            ActionSpec(
                name="anneal",
                parameters=[
                    ParameterLimit(name="temperature_c", minimum=20, maximum=1200),
                    ParameterLimit(name="time_s", minimum=1, maximum=100),
                    ParameterLimit(name="ramp_c_per_min", minimum=1, maximum=20),
                    ParameterLimit(name="gas", type="string", choices=["ar"], required=False),
                ],
            )
        ],
    )
    gate = SafetyGate(spec(), {"f1": optional, "m1": METER})
    assert gate.check_proposal({"temperature_c": 500, "time_s": 3})


class FakeClock:
    """A monotonic clock the test moves by hand, in seconds."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ramped_furnace(name: str, max_rate: float) -> InstrumentDescription:
    return InstrumentDescription(
        name=name,
        driver="test",
        driver_version="1",
        actions=[
            ActionSpec(
                name="anneal",
                parameters=[
                    ParameterLimit(
                        name="temperature_c",
                        minimum=20,
                        maximum=1200,
                        unit="degC",
                        max_rate_per_s=max_rate,
                    ),
                    ParameterLimit(name="time_s", minimum=1, maximum=100),
                    ParameterLimit(name="ramp_c_per_min", minimum=1, maximum=20),
                ],
            )
        ],
    )


def test_rate_limits_refuse_changes_faster_than_declared_between_commands() -> None:
    clock = FakeClock()
    furnaces = {"f1": ramped_furnace("f1", 2.0), "f2": ramped_furnace("f2", 2.0)}
    gate = SafetyGate(spec(), {**furnaces, "m1": METER}, clock)

    def send(inst: str, t: float) -> None:
        params = {"temperature_c": t, "time_s": 5, "ramp_c_per_min": 10}
        gate.check_dispatch(inst, 0, params)
        gate.sent(inst, 0, params, acknowledged=True)

    send("f1", 500)  # the first command has nothing to be compared with
    clock.now += 10
    send("f1", 520)  # 20 degC in 10 s: exactly 2 degC/s
    clock.now += 10
    with pytest.raises(ParameterLimitError) as info:
        send("f1", 600)  # 80 degC in 10 s
    assert (info.value.parameter, info.value.instrument, info.value.value) == (
        "temperature_c",
        "f1",
        600,
    )
    assert "max rate 2 degC/s" in info.value.limit
    send("f1", 500)  # the refused value was not sent: 20 degC from 520 in 10 s is fine
    send("f2", 1000)  # each instrument has its own history
    with pytest.raises(ParameterLimitError):
        send("f1", 501)  # no time has passed since the last command to f1
    send("f1", 500)  # holding the same value is always allowed
    # the proposal check cannot know when the step will run: rates are not applied there
    assert gate.check_proposal({"temperature_c": 1100, "time_s": 10})["temperature_c"] == 1100


def test_a_rate_limit_must_be_positive_and_on_a_number() -> None:
    with pytest.raises(ValueError, match="max_rate_per_s"):
        ParameterLimit(name="gas", type="string", max_rate_per_s=1.0)
    with pytest.raises(ValueError, match="greater than 0"):
        ParameterLimit(name="t", max_rate_per_s=0)


def test_a_command_of_unknown_fate_keeps_both_values_for_the_rate_limits() -> None:
    clock = FakeClock()
    gate = SafetyGate(spec(), {"f1": ramped_furnace("f1", 2.0), "m1": METER}, clock)

    def params(t: float) -> dict[str, float]:
        return {"temperature_c": t, "time_s": 5, "ramp_c_per_min": 10}

    gate.check_dispatch("f1", 0, params(500))
    gate.sent("f1", 0, params(500), acknowledged=True)
    clock.now += 10
    gate.check_dispatch("f1", 0, params(520))  # passes the gate, but the submit gets no
    gate.sent("f1", 0, params(520), acknowledged=False)  # answer: 500 or 520 now
    clock.now += 10
    gate.check_dispatch("f1", 0, params(530))  # within 2 degC/s of both
    with pytest.raises(ParameterLimitError, match="from 500"):
        gate.check_dispatch("f1", 0, params(545))  # fine from 520, too fast from 500
    gate.sent("f1", 0, params(530), acknowledged=True)  # acknowledged: 530 settles it
    clock.now += 10
    gate.check_dispatch("f1", 0, params(550))
    # a value checked but never sent (refused by the instrument) is not remembered
    gate.check_dispatch("f1", 0, params(540))
    clock.now += 1
    gate.check_dispatch("f1", 0, params(532))  # measured from 530, not from 540
