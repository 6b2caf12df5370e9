"""The sila2 driver against a SiLA 2 heater built with ``sila2``, directly and over ZeroMQ."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

pytest.importorskip("sila2")

import sila2_heater as heater  # examples/standards, put on sys.path by conftest

from instruments.client import InstrumentClient
from instruments.driver import get_driver
from instruments.protocol import RequestStatus
from instruments.server import InstrumentServer
from instruments.standards.sila2 import Sila2Driver, Sila2Options
from models.errors import InstrumentError
from tests.instruments.standards.conftest import free_port


@pytest.fixture
def sila_server() -> Iterator[tuple[Any, int]]:
    port = free_port()
    server = heater.start_heater(port)
    try:
        yield server, port
    finally:
        server.stop()


def options(port: int, **changes: Any) -> Sila2Options:
    raw: dict[str, Any] = {
        "port": port,
        "insecure": True,
        "safe_commands": ["HeaterController.SwitchOff"],
        "timeouts_s": {"HeaterController.HeatTo": 30},
    }
    raw.update(changes)
    return Sila2Options.model_validate(raw)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_discovery_maps_constraints_to_limits(sila_server: tuple[Any, int]) -> None:
    _, port = sila_server

    async def body() -> None:
        driver = Sila2Driver("heater", options(port))
        await driver.connect()
        try:
            specs = {a.name: a for a in driver.actions()}
            assert sorted(specs) == [
                "HeaterController.HeatTo",
                "HeaterController.SetFanSpeed",
                "HeaterController.SwitchOff",
                "HeaterController.Temperature",
            ]
            (target,) = specs["HeaterController.HeatTo"].parameters
            assert (target.type, target.minimum, target.maximum, target.unit) == (
                "number",
                20.0,
                300.0,
                "degC",
            )
            assert [(o.name, o.unit) for o in specs["HeaterController.HeatTo"].outputs] == [
                ("FinalTemperature", "degC"),
                ("HeatInput", ""),
            ]
            assert specs["HeaterController.HeatTo"].timeout_s == 30
            (speed,) = specs["HeaterController.SetFanSpeed"].parameters
            assert (speed.type, speed.choices) == ("integer", [0, 1, 2, 3])
            assert specs["HeaterController.Temperature"].retry_safe
        finally:
            await driver.close()

    run(body())


def test_observable_command_property_and_safe_state(sila_server: tuple[Any, int]) -> None:
    server, port = sila_server

    async def body() -> None:
        driver = Sila2Driver("heater", options(port))
        await driver.connect()
        try:
            final, heat = await driver.run("HeaterController.HeatTo", {"TargetTemperature": 120.0})
            assert (final.value, final.unit) == (120.0, "degC")
            assert heat.value == heater.heat_input_j(heater.AMBIENT_C, 120.0)
            assert driver.progress is not None
            assert (driver.progress.status, driver.progress.progress) == (
                "finishedSuccessfully",
                1.0,
            )
            (temp,) = await driver.run("HeaterController.Temperature", {})
            assert temp.value == server.heater_state.temperature_c == 120.0
            (speed,) = await driver.run("HeaterController.SetFanSpeed", {"Speed": 3})
            assert speed.value == 3 == server.heater_state.fan_speed
            with pytest.raises(InstrumentError) as info:
                await driver.run("HeaterController.SetFanSpeed", {"Speed": 7})
            assert info.value.code == "parameter_rejected"
            said = await driver.safe_state()
            assert said == "cancelled 0 running commands; called HeaterController.SwitchOff"
            assert server.heater_state.temperature_c == heater.AMBIENT_C
        finally:
            await driver.close()

    run(body())


def test_cancel_reaches_the_server(sila_server: tuple[Any, int]) -> None:
    server, port = sila_server

    async def body() -> None:
        driver = Sila2Driver("heater", options(port))
        await driver.connect()
        try:
            task = asyncio.create_task(
                driver.run("HeaterController.HeatTo", {"TargetTemperature": 300.0})
            )
            while driver.progress is None or not driver.progress.progress:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(200):  # the server's ramp thread sees the cancel
                if not server.heater_state.cancels:
                    break
                await asyncio.sleep(0.01)
            # HeatTo's entry leaves ``cancels`` only when its ramp loop has ended, so the
            # ramp stopped short of the target and nothing moves the temperature any more
            assert not server.heater_state.cancels
            stopped_at = server.heater_state.temperature_c
            assert heater.AMBIENT_C < stopped_at < 300.0
            (now,) = await driver.run("HeaterController.Temperature", {})
            assert now.value == stopped_at
        finally:
            await driver.close()

    run(body())


def test_tls_with_the_servers_ca(tmp_path: Path) -> None:
    port = free_port()
    server = heater.start_heater(port, insecure=False)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(server.heater_ca)

    async def body() -> None:
        driver = Sila2Driver("heater", options(port, insecure=False, root_certs=str(ca)))
        await driver.connect()
        try:
            (temp,) = await driver.run("HeaterController.Temperature", {})
            assert temp.value == heater.AMBIENT_C
        finally:
            await driver.close()

    try:
        run(body())
    finally:
        server.stop()


def test_bad_options(sila_server: tuple[Any, int]) -> None:
    _, port = sila_server
    assert get_driver("sila2") is Sila2Driver
    with pytest.raises(ValidationError, match="insecure"):
        options(port, root_certs="ca.pem")
    with pytest.raises(ValidationError, match="extra"):
        options(port, address="x")

    async def body() -> None:
        bad = options(port, parameters={"HeaterController.HeatTo": {"Nope": {"maximum": 1}}})
        with pytest.raises(InstrumentError, match=r"parameters\.HeaterController\.HeatTo\.Nope"):
            await Sila2Driver("heater", bad).connect()
        with pytest.raises(InstrumentError, match="no feature 'Oven'"):
            await Sila2Driver("heater", options(port, features=["Oven"])).connect()

    run(body())


def test_through_server_and_client(sila_server: tuple[Any, int]) -> None:
    sila, port = sila_server

    async def body() -> None:
        server = InstrumentServer(Sila2Driver("heater", options(port)), "tcp://127.0.0.1:*")
        client = InstrumentClient(await server.start(), name="heater", timeout_s=5.0)
        try:
            desc = await client.describe()
            assert desc.driver == "sila2"
            await client.submit("r-1", "HeaterController.HeatTo", {"TargetTemperature": 75.5})
            state = await client.wait("r-1", timeout_s=20)
            assert state.state is RequestStatus.COMPLETED
            assert {m.name: m.value for m in state.measurements} == {
                "FinalTemperature": 75.5,
                "HeatInput": heater.heat_input_j(heater.AMBIENT_C, 75.5),
            }
            with pytest.raises(InstrumentError, match="TargetTemperature") as info:
                await client.submit("r-2", "HeaterController.HeatTo", {"TargetTemperature": 301})
            assert info.value.code == "parameter_out_of_limits"
            await client.submit("r-3", "HeaterController.HeatTo", {"TargetTemperature": 300.0})
            await asyncio.sleep(0.05)
            cancelled = await client.cancel("r-3")
            assert cancelled.state is RequestStatus.CANCELLED
            for _ in range(200):  # the server's ramp thread sees the cancel
                if not sila.heater_state.cancels:
                    break
                await asyncio.sleep(0.01)
            # HeatTo's entry leaves ``cancels`` only when its ramp loop has ended: it
            # stopped short of the target, where the temperature now stays
            assert not sila.heater_state.cancels
            assert sila.heater_state.temperature_c < 300.0
        finally:
            await client.close()
            await server.stop()

    run(body())
