"""The ophyd driver against ophyd-async's simulated devices, directly and over ZeroMQ."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

pytest.importorskip("ophyd_async")

from ophyd_async.sim._pattern_generator import generate_interesting_pattern

from instruments.client import InstrumentClient
from instruments.driver import get_driver
from instruments.protocol import RequestStatus
from instruments.server import InstrumentServer
from instruments.standards.ophyd import OphydDriver, OphydOptions
from models.errors import InstrumentError


def beamline_options(**changes: Any) -> OphydOptions:
    raw: dict[str, Any] = {
        "devices": {
            "motor": {"class": "ophyd_async.sim.SimMotor", "kwargs": {"units": "mm"}},
            "pattern": {"class": "ophyd_async.sim.PatternGenerator"},
            "stage": {
                "class": "ophyd_async.sim.SimStage",
                "refs": {"pattern_generator": "pattern"},
            },
            "det": {
                "class": "ophyd_async.sim:SimPointDetector",
                "refs": {"pattern_generator": "pattern"},
                "kwargs": {"num_channels": 2},
            },
        },
        "actions": {
            "move": {
                "set": {"position_mm": {"device": "motor", "minimum": -5, "maximum": 5}},
                "read": ["motor"],
                "rename": {"motor": "position"},
            },
            "point": {
                "set": {
                    "x": {"device": "stage.x", "minimum": -2, "maximum": 2, "unit": "mm"},
                    "y": {"device": "stage.y", "minimum": -2, "maximum": 2, "unit": "mm"},
                },
                "stage": ["stage"],
                "trigger": ["det"],
                "read": ["det"],
                "timeout_s": 20,
            },
        },
    }
    raw.update(changes)
    return OphydOptions.model_validate(raw)


def expected_counts(x: float, y: float, channel: int, acquire_time_s: float = 0.1) -> float:
    """What SimPointDetector computes for a channel at the stage position (low energy)."""
    return float(int(generate_interesting_pattern(x, y, channel, 10) * 10000 * acquire_time_s))


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_move_and_detect() -> None:
    async def body() -> None:
        driver = OphydDriver("beamline", beamline_options())
        await driver.connect()
        specs = {a.name: a for a in driver.actions()}
        assert [o.name for o in specs["move"].outputs] == ["position"]
        assert specs["move"].outputs[0].unit == "mm"
        assert [o.name for o in specs["point"].outputs] == [
            "det_channel_1_value",
            "det_channel_2_value",
        ]
        (pos,) = await driver.run("move", {"position_mm": 2.5})
        assert (pos.name, pos.value, pos.unit) == ("position", 2.5, "mm")
        assert await driver.device("motor").user_readback.get_value() == 2.5
        got = await driver.run("point", {"x": 0.4, "y": -0.3})
        x = await driver.device("stage.x").user_readback.get_value()
        y = await driver.device("stage.y").user_readback.get_value()
        assert (x, y) == pytest.approx((0.4, -0.3))
        assert [m.value for m in got] == [expected_counts(x, y, 1), expected_counts(x, y, 2)]
        assert await driver.safe_state() == "stopped motor"

    run(body())


def test_simulated_connects_with_mock_backends() -> None:
    async def body() -> None:
        from ophyd_async.core import get_mock_put

        options = beamline_options(
            devices={"motor": {"class": "ophyd_async.sim.SimMotor"}},
            actions={"move": {"set": {"p": {"device": "motor.user_setpoint"}}}},
        )
        driver = OphydDriver("beamline", options, simulated=True)
        await driver.connect()
        assert await driver.run("move", {"p": 1.5}) == []
        get_mock_put(driver.device("motor.user_setpoint")).assert_called_once()
        assert get_mock_put(driver.device("motor.user_setpoint")).call_args.args[0] == 1.5

    run(body())


def test_bad_options_name_the_key() -> None:
    assert get_driver("ophyd") is OphydDriver
    with pytest.raises(ValidationError, match=r"actions\.move\.read\[0\]: no device 'nope'"):
        beamline_options(actions={"move": {"read": ["nope"]}})
    with pytest.raises(ValidationError, match=r"devices\.a\.refs\.g: no earlier device"):
        beamline_options(devices={"a": {"class": "x.Y", "refs": {"g": "b"}}})

    async def body() -> None:
        options = beamline_options(
            devices={"motor": {"class": "ophyd_async.sim.NoSuchMotor"}},
            actions={"move": {"read": ["motor"]}},
        )
        with pytest.raises(InstrumentError, match=r"devices\.motor"):
            await OphydDriver("beamline", options).connect()

    run(body())


def test_through_server_and_client() -> None:
    async def body() -> None:
        server = InstrumentServer(OphydDriver("beamline", beamline_options()), "tcp://127.0.0.1:*")
        client = InstrumentClient(await server.start(), name="beamline", timeout_s=5.0)
        try:
            assert (await client.describe()).driver == "ophyd"
            await client.submit("r-1", "move", {"position_mm": -1.25})
            state = await client.wait("r-1", timeout_s=20)
            assert state.state is RequestStatus.COMPLETED
            assert [(m.name, m.value) for m in state.measurements] == [("position", -1.25)]
            with pytest.raises(InstrumentError, match="position_mm"):
                await client.submit("r-2", "move", {"position_mm": 6.0})
        finally:
            await client.close()
            await server.stop()

    run(body())
