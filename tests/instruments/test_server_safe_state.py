"""The ``safe_state`` message (emergency stop) over real ZeroMQ sockets on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from instruments.client import InstrumentClient, InstrumentReplyError
from instruments.driver import ActionSpec, Driver, OutputSpec, ParameterLimit
from instruments.protocol import UNKNOWN_TYPE, RequestStatus
from instruments.server import InstrumentServer
from models.instrument_spec import SimulatedInstrumentSpec
from models.records import Measurement
from sim.furnace import SimulatedFurnaceDriver

LOOPBACK = "tcp://127.0.0.1:*"


class Pump(Driver):
    """Pumps for ``s`` seconds; its safe state stops the pump (slowly: ``stop_s``)."""

    driver_name = "test-pump"

    def __init__(self, name: str = "pump", stop_s: float = 0.0) -> None:
        super().__init__(name)
        self.stop_s = stop_s
        self.pumping = False
        self.cancelled = 0
        self.events: list[str] = []

    def actions(self) -> list[ActionSpec]:
        return [
            ActionSpec(
                name="pump",
                parameters=[ParameterLimit(name="s", minimum=0, maximum=60)],
                outputs=[OutputSpec(name="volume_ml")],
            )
        ]

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        self.pumping = True
        try:
            await asyncio.sleep(float(parameters["s"]))
        except asyncio.CancelledError:
            self.cancelled += 1
            self.events.append("cancelled")
            raise
        return [Measurement("volume_ml", 1.0)]

    async def safe_state(self) -> str:
        self.events.append("safe_state")
        await asyncio.sleep(self.stop_s)
        self.pumping = False
        return "pump stopped"


class OldServer(InstrumentServer):
    """A server from before ``safe_state`` existed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        del self._handlers["safe_state"]


async def _until(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_safe_state_cancels_running_and_queued_then_makes_the_driver_safe() -> None:
    async def go() -> None:
        pump = Pump(stop_s=0.5)
        server = InstrumentServer(pump, LOOPBACK)
        address = await server.start()
        try:
            async with InstrumentClient(address, timeout_s=5) as client:
                await client.submit("r1", "pump", {"s": 30})
                await client.submit("r2", "pump", {"s": 30})
                await _until(lambda: pump.pumping)
                stop = asyncio.create_task(client.safe_state())
                # while the driver ramps down the server still answers
                await _until(lambda: "safe_state" in pump.events)
                beat = await client.heartbeat()
                assert beat["name"] == "pump"
                assert not stop.done()
                reply = await stop
                assert reply.name == "pump"
                assert reply.description == "pump stopped"
                assert reply.cancelled == ["r1", "r2"]
                assert pump.events == ["cancelled", "safe_state"]  # cancel first, then safe
                assert not pump.pumping
                for rid in ("r1", "r2"):
                    assert (await client.status(rid)).state is RequestStatus.CANCELLED
                # idempotent: nothing more to cancel, made safe again
                again = await client.safe_state()
                assert again.cancelled == []
                assert pump.events.count("safe_state") == 2
        finally:
            await server.stop()

    asyncio.run(go())


def test_a_driver_without_a_safe_state_says_so() -> None:
    class Plain(Pump):
        async def safe_state(self) -> str:
            return await Driver.safe_state(self)

    async def go() -> None:
        server = InstrumentServer(Plain(), LOOPBACK)
        try:
            async with InstrumentClient(await server.start()) as client:
                reply = await client.safe_state()
                assert reply.description == "no safe state declared"
        finally:
            await server.stop()

    asyncio.run(go())


def test_a_server_that_predates_safe_state_answers_unknown_type() -> None:
    async def go() -> None:
        server = OldServer(Pump(), LOOPBACK)
        try:
            async with InstrumentClient(await server.start()) as client:
                with pytest.raises(InstrumentReplyError) as err:
                    await client.safe_state()
                assert err.value.code == UNKNOWN_TYPE
                assert err.value.field == "type"
        finally:
            await server.stop()

    asyncio.run(go())


def test_the_simulated_furnace_ramps_down_on_safe_state_but_not_on_cancel() -> None:
    spec = SimulatedInstrumentSpec(
        driver="sim-furnace",
        world="branin",
        duration_s=30.0,
        options={"setpoint_c": 900, "cooling_c_per_s": 5},
    )
    furnace = SimulatedFurnaceDriver("furnace-1", spec)

    async def go() -> None:
        server = InstrumentServer(furnace, LOOPBACK)
        try:
            async with InstrumentClient(await server.start()) as client:
                await client.submit("h1", "measure", {"x1": 1.0, "x2": 2.0})
                await _until(lambda: furnace.heater_on)
                assert furnace.state["temperature_c"] == 900
                await client.cancel("h1")
                await asyncio.sleep(0.05)
                assert furnace.heater_on  # a cancel stops the program, not the heater
                reply = await client.safe_state()
                assert reply.description.startswith("heater off: ramping down from 900 degC")
                assert furnace.state["mode"] == "ramping_down"
                assert not furnace.state["heater_on"]
                assert furnace.safe_states == 1
        finally:
            await server.stop()

    asyncio.run(go())
