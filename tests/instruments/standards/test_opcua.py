"""The opcua driver against an asyncua heater server, directly and over ZeroMQ."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

pytest.importorskip("asyncua")

import opcua_heater as heater  # examples/standards, put on sys.path by conftest

from instruments.client import InstrumentClient
from instruments.driver import get_driver
from instruments.protocol import RequestStatus
from instruments.server import InstrumentServer
from instruments.standards.opcua import OpcUaDriver, OpcUaOptions
from models.errors import InstrumentError
from tests.instruments.standards.conftest import free_port


def heater_options(port: int, **changes: Any) -> OpcUaOptions:
    raw: dict[str, Any] = {
        "url": f"opc.tcp://127.0.0.1:{port}/sdlab/heater",
        "namespace": heater.NAMESPACE,
        "functional_unit": "Lab/Heater",
        "actions": {
            "heat": {
                "call": {"method": "SetTemperature"},
                "parameters": {"Target": {"minimum": 20, "maximum": 400, "unit": "degC"}},
                "output_units": {"RampTime": "s"},
                "read": {"temperature": {"node": "Temperature", "unit": "degC"}},
            },
            "power": {
                "write": {"power_pct": {"node": "Power", "unit": "%"}},
                "parameters": {"power_pct": {"minimum": 0, "maximum": 100, "unit": "%"}},
                "read": {"power": {"node": "Power", "unit": "%"}},
            },
            "read": {"read": {"temperature": {"node": "Temperature", "unit": "degC"}}},
        },
        "safe_state": {"method": "Stop"},
    }
    raw.update(changes)
    return OpcUaOptions.model_validate(raw)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_discovery_and_actions() -> None:
    async def body() -> None:
        port = free_port()
        server = await heater.start_heater(port)
        driver = OpcUaDriver("heater", heater_options(port))
        try:
            await driver.connect()
            specs = {a.name: a for a in driver.actions()}
            (target,) = specs["heat"].parameters
            assert (target.name, target.type, target.maximum) == ("Target", "number", 400)
            assert [o.name for o in specs["heat"].outputs] == ["RampTime", "temperature"]
            ramp, temp = await driver.run("heat", {"Target": 150.0})
            assert (ramp.name, ramp.value, ramp.unit) == (
                "RampTime",
                heater.ramp_time_s(heater.AMBIENT_C, 150.0),
                "s",
            )
            assert (temp.value, temp.unit) == (150.0, "degC")
            ramp, _ = await driver.run("heat", {"Target": 100.0})
            assert ramp.value == heater.ramp_time_s(150.0, 100.0)
            (power,) = await driver.run("power", {"power_pct": 42.5})
            assert power.value == 42.5
            assert await driver.safe_state() == "called Stop()"
            (temp,) = await driver.run("read", {})
            assert temp.value == heater.AMBIENT_C
            (power,) = await driver.run("power", {})
            assert power.value == 0.0
        finally:
            await driver.close()
            await server.stop()

    run(body())


def test_bad_node_names_the_options_key() -> None:
    async def body() -> None:
        port = free_port()
        server = await heater.start_heater(port)
        options = heater_options(port, actions={"x": {"read": {"t": {"node": "Nope"}}}})
        driver = OpcUaDriver("heater", options)
        try:
            with pytest.raises(InstrumentError, match=r"actions\.x\.read\.t\.node") as info:
                await driver.connect()
            assert info.value.code == "no_such_node"
        finally:
            await server.stop()

    run(body())


def test_bad_options_refused() -> None:
    assert get_driver("opcua") is OpcUaDriver
    with pytest.raises(ValidationError, match="url"):
        heater_options(1, url="http://x")
    with pytest.raises(ValidationError, match="extra"):
        heater_options(1, endpoint="x")


def test_unreachable_server_is_retryable() -> None:
    async def body() -> None:
        driver = OpcUaDriver("heater", heater_options(free_port(), timeout_s=1.0))
        with pytest.raises(InstrumentError) as info:
            await driver.connect()
        assert (info.value.code, info.value.retryable) == ("connect_failed", True)

    run(body())


def test_through_server_and_client() -> None:
    async def body() -> None:
        port = free_port()
        ua_server = await heater.start_heater(port)
        server = InstrumentServer(OpcUaDriver("heater", heater_options(port)), "tcp://127.0.0.1:*")
        try:
            client = InstrumentClient(await server.start(), name="heater", timeout_s=5.0)
            desc = await client.describe()
            assert desc.driver == "opcua"
            assert desc.action("heat").parameters[0].unit == "degC"
            await client.submit("r-1", "heat", {"Target": 250.0})
            state = await client.wait("r-1", timeout_s=20)
            assert state.state is RequestStatus.COMPLETED
            assert {m.name: m.value for m in state.measurements} == {
                "RampTime": heater.ramp_time_s(heater.AMBIENT_C, 250.0),
                "temperature": 250.0,
            }
            with pytest.raises(InstrumentError, match="Target") as info:
                await client.submit("r-2", "heat", {"Target": 401.0})
            assert info.value.code == "parameter_out_of_limits"
            await client.close()
        finally:
            await server.stop()
            await ua_server.stop()

    run(body())
