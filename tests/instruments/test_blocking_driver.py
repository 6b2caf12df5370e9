"""BlockingDriver: blocking I/O in one worker thread while the server keeps answering."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from instruments.client import InstrumentClient
from instruments.driver import ActionSpec, BlockingDriver, Driver, OutputSpec
from instruments.protocol import RequestStatus
from instruments.server import InstrumentServer
from models.records import Measurement


class GateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gain: float = 2.0


class GateDriver(BlockingDriver):
    """``work`` blocks its thread (no await) until the test opens the gate."""

    driver_name = "test-gate"
    Options = GateOptions

    def __init__(self, name: str = "gate", options: BaseModel | None = None) -> None:
        super().__init__(name, options)
        self.gate = threading.Event()
        self.started = threading.Event()
        self.threads: set[str] = set()
        self.saw_cancel = False
        self.connected = False

    def actions(self) -> list[ActionSpec]:
        return [ActionSpec(name="work", outputs=[OutputSpec(name="y")], timeout_s=30)]

    def connect_blocking(self) -> None:
        self.threads.add(threading.current_thread().name)
        self.connected = True

    def run_blocking(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        self.threads.add(threading.current_thread().name)
        self.started.set()
        self.gate.wait(20)  # blocks the thread, as pyserial's read would
        self.saw_cancel = self.cancel_requested
        assert isinstance(self.options, GateOptions)
        return [Measurement("y", self.options.gain)]

    def safe_state_blocking(self) -> str:
        return "gate closed"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_heartbeats_answered_while_a_blocking_call_works() -> None:
    async def body() -> None:
        driver = GateDriver(options=GateOptions(gain=3.0))
        server = InstrumentServer(driver, "tcp://127.0.0.1:*")
        client = InstrumentClient(await server.start(), name="gate", timeout_s=2.0)
        try:
            assert driver.connected  # the server connected it before describing it
            await client.submit("r-1", "work", {})
            await asyncio.to_thread(driver.started.wait, 10)
            for _ in range(5):  # each would time out if the event loop were blocked
                beat = await client.heartbeat()
                assert (beat["state"], beat["busy_with"]) == ("busy", ["r-1"])
            driver.gate.set()
            state = await client.wait("r-1", timeout_s=10)
            assert state.state is RequestStatus.COMPLETED
            assert state.measurements[0].value == 3.0
            assert len(driver.threads) == 1  # one worker thread: calls stay serialised
            assert driver.threads != {threading.current_thread().name}
        finally:
            await client.close()
            await server.stop()

    run(body())


def test_cancel_returns_at_once_and_flags_the_blocked_call() -> None:
    async def body() -> None:
        driver = GateDriver()
        server = InstrumentServer(driver, "tcp://127.0.0.1:*")
        client = InstrumentClient(await server.start(), name="gate", timeout_s=2.0)
        try:
            await client.submit("r-1", "work", {})
            await asyncio.to_thread(driver.started.wait, 10)
            assert (await client.cancel("r-1")).state is RequestStatus.CANCELLED
            assert driver.cancel_requested
            driver.gate.set()
            for _ in range(500):
                if not driver.cancel_requested:
                    break
                await asyncio.sleep(0.01)
            assert driver.saw_cancel
            assert not driver.cancel_requested
            assert await driver.safe_state() == "gate closed"
        finally:
            await client.close()
            await server.stop()

    run(body())


def test_options_and_simulated_are_checked() -> None:
    class Plain(Driver):
        driver_name = "test-plain"

        def actions(self) -> list[ActionSpec]:
            return []

        async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
            return []

    plain = Plain("p")
    assert plain.options.model_dump() == {}
    assert plain.simulated is False
    assert run(plain.safe_state()) == "no safe state declared"
    with pytest.raises(ValueError, match="no simulated backend"):
        Plain("p", simulated=True)
