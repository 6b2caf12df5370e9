"""A blocking driver keeps its heartbeats (controller/health.py against a real server).

An action that blocks for several heartbeat intervals (``time.sleep``, as a pyserial read
would) runs in a :class:`~instruments.driver.BlockingDriver`: the server's event loop keeps
answering heartbeats, so the controller's health monitor never sees the instrument go
UNKNOWN. The same work written as a plain :class:`~instruments.driver.Driver` blocks the
event loop, and the monitor does mark it UNKNOWN: the baseline that shows the test can fail.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest
import zmq.asyncio
from sqlalchemy.orm import Session, sessionmaker

from controller.alarms import Alarms
from controller.health import HealthMonitor
from controller.work import InstrumentSlot
from instruments.client import InstrumentClient
from instruments.driver import ActionSpec, BlockingDriver, Driver, OutputSpec
from instruments.server import InstrumentServer
from models.campaign import AlarmSpec, ReliabilitySpec
from models.records import Measurement
from models.status import InstrumentState

HEARTBEAT_S = 0.1
SILENT_AFTER_S = 0.5
BLOCK_S = 6 * SILENT_AFTER_S  # many heartbeat intervals, several silence windows

WORK = ActionSpec(name="work", outputs=[OutputSpec(name="done")], timeout_s=60.0)


class SleepyBlocking(BlockingDriver):
    """Blocks in ``time.sleep``, declared as blocking: runs in a worker thread."""

    driver_name = "sleepy-blocking"

    def actions(self) -> list[ActionSpec]:
        return [WORK]

    def run_blocking(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        time.sleep(BLOCK_S)
        return [Measurement(name="done", value=1.0)]


class SleepyPlain(Driver):
    """The same blocking call inside a plain async ``run``: it stalls the event loop."""

    driver_name = "sleepy-plain"

    def actions(self) -> list[ActionSpec]:
        return [WORK]

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        time.sleep(BLOCK_S)  # the mistake this test exists to catch
        return [Measurement(name="done", value=1.0)]


class ServerThread:
    """An instrument server in its own thread and event loop (as in its own process)."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.endpoint = ""
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        ctx = zmq.asyncio.Context()
        server = InstrumentServer(self.driver, "tcp://127.0.0.1:*", context=ctx)
        self.endpoint = await server.start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await server.stop()
        ctx.term()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(30), "server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(BLOCK_S + 30)


def states_while_working(
    driver: Driver, factory: sessionmaker[Session], campaign_id: int
) -> list[InstrumentState]:
    """The instrument's state, sampled every 50 ms while its blocking action runs."""
    spec = ReliabilitySpec(heartbeat_s=HEARTBEAT_S, silent_after_s=SILENT_AFTER_S)

    async def noop() -> None:
        return None

    async def go(endpoint: str) -> list[InstrumentState]:
        tasks: set[asyncio.Task[None]] = set()

        def spawn(coro: Any) -> None:
            tasks.add(asyncio.ensure_future(coro))

        alarms = Alarms(AlarmSpec(), "demo", campaign_id, factory, spawn)
        slot = InstrumentSlot(
            name=driver.name,
            kind="station",
            address=endpoint,
            client=InstrumentClient(endpoint, name=driver.name),
        )
        monitor = HealthMonitor(
            {slot.name: slot}, spec, campaign_id, factory, alarms, noop, lambda s: None
        )
        watch = asyncio.create_task(monitor.watch(slot))
        try:
            for _ in range(200):
                if slot.state is InstrumentState.IDLE:
                    break
                await asyncio.sleep(0.05)
            assert slot.state is InstrumentState.IDLE, "the instrument never answered"
            async with InstrumentClient(endpoint, name=driver.name, timeout_s=60) as client:
                await client.submit("r1", "work", {}, wait_s=0)
                seen: list[InstrumentState] = []
                t_end = time.monotonic() + BLOCK_S
                while time.monotonic() < t_end:
                    seen.append(slot.state)
                    await asyncio.sleep(0.05)
                done = await client.status("r1", wait_s=30)
                assert done.state.value == "completed"
            return seen
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            await slot.client.close()

    with ServerThread(driver) as server:
        return asyncio.run(go(server.endpoint))


@pytest.fixture
def sqlite_only(db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("the store is not what this test is about")


@pytest.mark.usefixtures("sqlite_only")
def test_a_blocking_driver_never_goes_unknown_while_it_works(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    seen = states_while_working(SleepyBlocking("sleepy"), factory, campaign_id)
    assert seen, "no samples"
    assert InstrumentState.UNKNOWN not in seen


@pytest.mark.usefixtures("sqlite_only")
def test_the_same_call_in_a_plain_driver_goes_unknown(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    seen = states_while_working(SleepyPlain("sleepy"), factory, campaign_id)
    assert InstrumentState.UNKNOWN in seen
