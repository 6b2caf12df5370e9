"""The visa driver against pyvisa-sim's SCPI power supply, directly and over ZeroMQ."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

pytest.importorskip("pyvisa_sim")

from instruments.client import InstrumentClient
from instruments.driver import get_driver
from instruments.protocol import RequestStatus
from instruments.server import InstrumentServer
from instruments.standards.visa import VisaDriver, VisaOptions
from models.errors import InstrumentError

DEFINITION = Path(__file__).parent / "data" / "psu.yaml"
RESOURCE = "TCPIP::10.0.0.5::INSTR"


def psu_options(**changes: Any) -> VisaOptions:
    raw: dict[str, Any] = {
        "resource": RESOURCE,
        "backend": "@sim",
        "sim_definition": str(DEFINITION),
        "error_query": "SYST:ERR?",
        "actions": {
            "set_voltage": {
                "parameters": {"voltage_v": {"minimum": 0, "maximum": 30, "unit": "V"}},
                "steps": [
                    {"write": "VOLT {voltage_v:.3f}"},
                    {"write": "OUTP 1"},
                    {"query": "VOLT?", "output": "voltage", "unit": "V"},
                    {"query": "OUTP?", "output": "output", "parse": "int"},
                ],
                "retry_safe": True,
            },
            "sweep": {"steps": [{"query": "MEAS:SWEEP?", "output": "sweep", "parse": "list"}]},
            "status": {
                "steps": [
                    {
                        "query": "STAT?",
                        "output": "temperature",
                        "parse": "regex",
                        "regex": r"TEMP=(?P<t>[-\d.]+)C",
                        "group": "t",
                        "unit": "degC",
                    }
                ]
            },
            "read": {
                "steps": [
                    {"query": "VOLT?", "output": "voltage", "unit": "V"},
                    {"query": "OUTP?", "output": "output", "parse": "int"},
                ]
            },
            "bogus": {"steps": [{"write": "BOGUS"}]},
        },
        "safe_state": [{"write": "OUTP 0"}, {"write": "VOLT 0.000"}],
    }
    raw.update(changes)
    return VisaOptions.model_validate(raw)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_registered_and_declares_actions() -> None:
    assert get_driver("visa") is VisaDriver
    driver = VisaDriver("psu", psu_options())
    spec = {a.name: a for a in driver.actions()}
    volt = spec["set_voltage"]
    assert (volt.parameters[0].name, volt.parameters[0].maximum) == ("voltage_v", 30)
    assert [o.name for o in volt.outputs] == ["voltage", "output"]
    assert spec["sweep"].outputs[0].kind == "array"


def test_actions_against_pyvisa_sim() -> None:
    async def body() -> None:
        driver = VisaDriver("psu", psu_options())
        await driver.connect()
        try:
            assert driver.identity == "SDLAB,PSU-1,0001,1.0"
            got = await driver.run("set_voltage", {"voltage_v": 3.25})
            assert [(m.name, m.value, m.unit) for m in got] == [
                ("voltage", 3.25, "V"),
                ("output", 1.0, ""),
            ]
            (sweep,) = await driver.run("sweep", {})
            assert sweep.array == [0.5, 1.25, 2.5, 5.0]
            (temp,) = await driver.run("status", {})
            assert (temp.value, temp.unit) == (31.5, "degC")
            with pytest.raises(InstrumentError, match="Undefined header") as info:
                await driver.run("bogus", {})
            assert info.value.code == "instrument_error"
            said = await driver.safe_state()
            assert said == "sent OUTP 0; VOLT 0.000"
            volt, out = await driver.run("read", {})
            assert (volt.value, out.value) == (0.0, 0.0)
        finally:
            await driver.close()

    run(body())


def test_simulated_flag_swaps_the_backend() -> None:
    async def body() -> None:
        driver = VisaDriver("psu", psu_options(backend="@py"), simulated=True)
        await driver.connect()
        try:
            (m,) = await driver.run("sweep", {})
            assert m.array == [0.5, 1.25, 2.5, 5.0]
        finally:
            await driver.close()

    run(body())


def test_bad_options_name_the_field() -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        psu_options(actions={"x": {"steps": [{"write": "VOLT {volts}"}]}})
    with pytest.raises(ValidationError, match="names its output"):
        psu_options(actions={"x": {"steps": [{"query": "VOLT?"}]}})
    with pytest.raises(ValidationError, match="sim_definition"):
        psu_options(sim_definition=None)
    with pytest.raises(ValidationError, match="extra"):
        psu_options(baud=9600)


def test_unparseable_answer_fails_the_step() -> None:
    async def body() -> None:
        options = psu_options(
            actions={"idn": {"steps": [{"query": "*IDN?", "output": "x", "parse": "float"}]}}
        )
        driver = VisaDriver("psu", options)
        await driver.connect()
        try:
            with pytest.raises(InstrumentError, match="SDLAB,PSU-1") as info:
                await driver.run("idn", {})
            assert info.value.code == "bad_answer"
        finally:
            await driver.close()

    run(body())


def test_through_server_and_client() -> None:
    async def body() -> None:
        server = InstrumentServer(VisaDriver("psu", psu_options()), "tcp://127.0.0.1:*")
        endpoint = await server.start()
        client = InstrumentClient(endpoint, name="psu", timeout_s=5.0)
        try:
            desc = await client.describe()
            assert desc.driver == "visa"
            await client.submit("r-1", "set_voltage", {"voltage_v": 12.5})
            state = await client.wait("r-1", timeout_s=10)
            assert state.state is RequestStatus.COMPLETED
            assert {m.name: m.value for m in state.measurements} == {
                "voltage": 12.5,
                "output": 1.0,
            }
            with pytest.raises(InstrumentError, match="voltage_v") as info:
                await client.submit("r-2", "set_voltage", {"voltage_v": 31.0})
            assert info.value.code == "parameter_out_of_limits"
            await client.submit("r-3", "read", {})
            state = await client.wait("r-3", timeout_s=10)
            assert [m.value for m in state.measurements] == [12.5, 1.0]
        finally:
            await client.close()
            await server.stop()

    run(body())
