"""Tests of sim.drivers: the objective station declares the world's limits and measures it."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from instruments.driver import Driver, get_driver
from models.errors import InstrumentError, InvalidCampaignError
from models.instrument_spec import SimulatedInstrumentSpec
from models.records import Measurement
from sim.drivers import ObjectiveStationDriver, SimulatedDriver, make_driver
from sim.worlds import get_world

POINT = {"x1": 0.1, "x2": 0.9, "x3": 0.3, "x4": 0.4, "x5": 0.7, "x6": 0.2}


def _spec(**kw: object) -> SimulatedInstrumentSpec:
    data: dict[str, object] = {"world": "hartmann6"}
    data.update(kw)
    return SimulatedInstrumentSpec.model_validate(data)


def _measure(driver: Driver, points: list[dict[str, float]]) -> list[list[Measurement]]:
    async def go() -> list[list[Measurement]]:
        return [await driver.run("measure", p) for p in points]

    return asyncio.run(go())


def test_registered_under_objective_station() -> None:
    assert get_driver("objective-station") is ObjectiveStationDriver
    assert ObjectiveStationDriver.driver_name == "objective-station"


def test_make_driver_builds_the_registered_driver() -> None:
    d = make_driver("station-1", _spec())
    assert isinstance(d, ObjectiveStationDriver)
    assert d.name == "station-1"


@pytest.mark.parametrize("world", ["hartmann6", "branin"])
def test_limits_equal_world_bounds(world: str) -> None:
    d = make_driver("s", _spec(world=world, duration_s=2.5))
    desc = d.describe()
    assert desc.driver == "objective-station"
    assert [a.name for a in desc.actions] == ["measure"]
    action = desc.action("measure")
    assert action.parameters == get_world(world).parameters()
    assert action.outputs == get_world(world).outputs()
    assert action.retry_safe is True
    assert action.timeout_s == 25.0
    assert make_driver("s", _spec(duration_s=0.1)).actions()[0].timeout_s == 10.0


def test_noise_free_measurement_equals_truth() -> None:
    d = make_driver("s", _spec(noise_std=0.0))
    [[m]] = _measure(d, [POINT])
    assert m.name == "y"
    assert m.value == get_world("hartmann6").evaluate_true(POINT)["y"]
    assert m.uncertainty == 0.0
    assert m.array is None


def test_noise_has_configured_std_and_uncertainty() -> None:
    d = make_driver("s", _spec(noise_std=0.2, seed=11))
    truth = get_world("hartmann6").evaluate_true(POINT)["y"]
    results = _measure(d, [POINT] * 4000)
    values = np.array([r[0].value for r in results], dtype=float)
    assert all(r[0].uncertainty == 0.2 for r in results)
    residuals = values - truth
    assert residuals.std() == pytest.approx(0.2, abs=0.012)
    assert abs(residuals.mean()) < 5 * 0.2 / np.sqrt(residuals.size)


def test_noise_is_deterministic_per_seed_and_request_order() -> None:
    points = [POINT, {**POINT, "x1": 0.5}, {**POINT, "x2": 0.0}]
    a = _measure(make_driver("s", _spec(noise_std=0.5, seed=3)), points)
    b = _measure(make_driver("s", _spec(noise_std=0.5, seed=3)), points)
    c = _measure(make_driver("s", _spec(noise_std=0.5, seed=4)), points)
    assert a == b
    assert a != c


def test_default_seed_derives_from_instrument_name() -> None:
    a = _measure(make_driver("alpha", _spec(noise_std=0.5)), [POINT])
    a2 = _measure(make_driver("alpha", _spec(noise_std=0.5)), [POINT])
    b = _measure(make_driver("beta", _spec(noise_std=0.5)), [POINT])
    assert a == a2
    assert a != b


def test_driver_refuses_nothing_itself() -> None:
    # Limits are declared for the server to enforce; the driver evaluates whatever it gets.
    d = make_driver("s", _spec(world="branin"))
    action = d.actions()[0]
    outside = {"x1": 50.0, "x2": -3.0}
    with pytest.raises(ValueError, match="x1"):
        action.check(outside)
    [[m]] = _measure(d, [outside])
    assert m.value == get_world("branin").evaluate_true(outside)["y"]


def test_unknown_action_fails() -> None:
    d = make_driver("s", _spec())

    async def go() -> None:
        await d.run("anneal", POINT)

    with pytest.raises(InstrumentError) as info:
        asyncio.run(go())
    assert info.value.code == "unknown_action"


def test_duration_waits_without_blocking_the_loop() -> None:
    d = make_driver("s", _spec(duration_s=0.05))

    async def go() -> tuple[list[Measurement], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        t = asyncio.create_task(ticker())
        result = await d.run("measure", POINT)
        t.cancel()
        return result, ticks

    result, ticks = asyncio.run(go())
    assert ticks > 0
    assert result[0].value == get_world("hartmann6").evaluate_true(POINT)["y"]


def test_world_options_pass_through() -> None:
    d = make_driver("s", _spec(world="branin", options={"output": "score"}))
    [[m]] = _measure(d, [{"x1": 0.0, "x2": 0.0}])
    assert m.name == "score"


def test_bad_world_or_driver_names_the_key() -> None:
    with pytest.raises(InvalidCampaignError) as info:
        make_driver("s", _spec(world="nope"))
    assert info.value.problems[0].key == "world"
    assert "hartmann6" in info.value.problems[0].message
    with pytest.raises(InvalidCampaignError) as info:
        make_driver("s", _spec(driver="nope"))
    assert info.value.problems[0].key == "driver"
    with pytest.raises(InvalidCampaignError) as info:
        make_driver("s", _spec(options={"colour": 1}))
    assert info.value.problems[0].key == "options.colour"


def test_objective_station_is_a_simulated_driver() -> None:
    assert issubclass(ObjectiveStationDriver, SimulatedDriver)
