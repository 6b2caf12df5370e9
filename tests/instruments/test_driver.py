"""The driver contract (instruments/driver.py): options, simulation, connect, safe state,
and blocking drivers in their worker thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from instruments.client import InstrumentClient
from instruments.driver import ActionSpec, BlockingDriver, Driver, NoOptions, OutputSpec
from instruments.server import InstrumentServer
from models.records import Measurement

PROBE = ActionSpec(name="probe", outputs=[OutputSpec(name="thread")])


class PortOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    port: str = "/dev/ttyS0"
    baudrate: int = 9600


class Legacy(Driver):
    """A driver written before options existed: name only."""

    def actions(self) -> list[ActionSpec]:
        return [PROBE]

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        return [Measurement(name="thread", value=0.0)]


class Configured(Legacy):
    Options = PortOptions
    supports_simulation = True


def test_a_legacy_driver_gets_empty_options_and_is_not_simulated() -> None:
    d = Legacy("x")
    assert d.name == "x"
    assert isinstance(d.options, NoOptions)
    assert d.simulated is False
    assert asyncio.run(d.safe_state()) == "no safe state declared"
    with pytest.raises(ValueError, match="has no simulated backend"):
        Legacy("x", simulated=True)


def test_options_are_validated_by_the_drivers_model() -> None:
    d = Configured("x", {"port": "/dev/ttyUSB1"}, simulated=True)
    assert isinstance(d.options, PortOptions)
    assert d.options.port == "/dev/ttyUSB1"
    assert d.simulated is True
    assert Configured("x").options == PortOptions()
    with pytest.raises(ValidationError, match="baud"):
        Configured("x", {"baud": 1})  # extra="forbid": a typo is refused


async def _until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Let the event loop run until ``condition()`` holds (fail after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.005)


def _queued(d: BlockingDriver) -> int:
    """Calls waiting in the driver's worker queue, not yet taken by its thread."""
    return d._executor._work_queue.qsize()


class Blocking(BlockingDriver):
    """Records which thread each call ran in; ``probe`` blocks until released."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.release = threading.Event()
        self.threads: dict[str, int] = {}
        self.order: list[str] = []

    def actions(self) -> list[ActionSpec]:
        return [PROBE]

    def connect_blocking(self) -> None:
        self.threads["connect"] = threading.get_ident()

    def run_blocking(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        self.order.append(f"start {parameters.get('n')}")
        self.threads["run"] = threading.get_ident()
        self.release.wait(10)
        self.order.append(f"end {parameters.get('n')}")
        return [Measurement(name="thread", value=float(threading.get_ident() % 1000))]

    def safe_state_blocking(self) -> str:
        self.threads["safe"] = threading.get_ident()
        self.release.set()
        return "stopped"


def test_blocking_calls_run_in_one_worker_thread_in_order_and_safe_state_beside() -> None:
    d = Blocking("b")

    async def go() -> None:
        loop_thread = threading.get_ident()
        await d.connect()
        first = asyncio.create_task(d.run("probe", {"n": 1}))
        second = asyncio.create_task(d.run("probe", {"n": 2}))
        # serialised: once the first runs, the second waits in the driver's one worker's
        # queue (with a second worker it would leave the queue and start)
        await _until(lambda: d.order == ["start 1"] and _queued(d) == 1)
        assert d.order == ["start 1"]
        ticks = 0
        while ticks < 5:  # the event loop keeps running meanwhile
            await asyncio.sleep(0.01)
            ticks += 1
        assert await d.safe_state() == "stopped"  # not queued behind the blocked action
        await asyncio.gather(first, second)
        assert d.order == ["start 1", "end 1", "start 2", "end 2"]
        assert d.threads["connect"] == d.threads["run"] != loop_thread
        assert d.threads["safe"] not in (d.threads["run"], loop_thread)
        await d.close()

    asyncio.run(go())


class Discovering(Driver):
    """Learns its actions when it connects (as a SiLA or OPC UA client would)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.found: list[ActionSpec] = []
        self.closed = False

    async def connect(self) -> None:
        await asyncio.sleep(0)
        self.found = [PROBE]

    def actions(self) -> list[ActionSpec]:
        return list(self.found)

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        return [Measurement(name="thread", value=1.0)]

    async def close(self) -> None:
        self.closed = True


def test_the_server_connects_the_driver_before_it_describes_it() -> None:
    d = Discovering("disc")

    async def go() -> None:
        server = InstrumentServer(d, "tcp://127.0.0.1:*")
        endpoint = await server.start()
        try:
            async with InstrumentClient(endpoint, name="disc") as client:
                desc = await client.describe()
                assert [a.name for a in desc.actions] == ["probe"]
                state = await client.submit("r1", "probe", {}, wait_s=5)
                assert state.measurements[0].value == 1.0
        finally:
            await server.stop()
        assert d.closed

    asyncio.run(go())


def test_a_blocking_close_waits_for_the_running_action() -> None:
    d = Blocking("b")

    async def go() -> None:
        run = asyncio.create_task(d.run("probe", {"n": 1}))
        await _until(lambda: d.order == ["start 1"])
        closing = asyncio.create_task(d.close())
        await _until(lambda: _queued(d) == 1)  # close_blocking waits behind the action
        assert not closing.done()
        d.release.set()
        await asyncio.gather(run, closing)
        assert d.order == ["start 1", "end 1"]

    asyncio.run(go())
