"""The health monitor reads its heartbeats: restarts, clock skew, a mismatched name.

Real ZeroMQ servers (the reference server with a journal, or a raw ROUTER peer) and a real
store; the monitor runs its own probe loop as in a campaign.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.alarms import Alarms
from controller.health import HealthMonitor
from controller.store import transaction
from controller.work import InstrumentSlot
from instruments.client import InstrumentClient
from instruments.protocol import RequestStatus, decode_message, encode_message, format_timestamp
from instruments.server import InstrumentServer
from models.campaign import AlarmSpec, ReliabilitySpec
from models.tables import EventRow
from tests.instruments.test_server_client import AdderDriver


def _monitor(
    slot: InstrumentSlot, factory: sessionmaker[Session], campaign_id: int
) -> HealthMonitor:
    tasks: list[asyncio.Task[None]] = []

    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        tasks.append(asyncio.get_running_loop().create_task(coro))

    async def changed() -> None:
        pass

    alarms = Alarms(AlarmSpec(), "demo", campaign_id, factory, spawn)
    spec = ReliabilitySpec(heartbeat_s=0.05, silent_after_s=5.0)
    return HealthMonitor({slot.name: slot}, spec, campaign_id, factory, alarms, changed, print)


def _events(factory: sessionmaker[Session]) -> list[EventRow]:
    with transaction(factory) as s:
        rows = list(s.scalars(select(EventRow).order_by(EventRow.id)).all())
        s.expunge_all()
        return rows


async def _until(condition: Any, what: str) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


def test_a_restart_is_noticed_at_the_next_heartbeat_and_the_step_asks_again(
    factory: sessionmaker[Session], campaign_id: int, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.jsonl"

    async def body() -> None:
        server = InstrumentServer(AdderDriver("adder-1"), "tcp://127.0.0.1:*", journal_path=journal)
        endpoint = await server.start()
        # the step's long poll would otherwise wait 60 s (wait_s) + 60 s (timeout) for a reply
        # the old server took with it; the test gives up long before
        step_client = InstrumentClient(endpoint, name="adder-1", timeout_s=60.0)
        slot = InstrumentSlot("adder-1", "adder", endpoint, step_client)
        slot.description = AdderDriver("adder-1").describe()  # as the controller's connect
        monitor = _monitor(slot, factory, campaign_id)
        watch = asyncio.create_task(monitor.watch(slot))
        server2 = None
        try:
            await step_client.submit("r1", "add", {"a": 1, "b": 1, "sleep_s": 30})
            for _ in range(500):
                if (await step_client.status("r1")).state is RequestStatus.RUNNING:
                    break
                await asyncio.sleep(0.01)
            poll = asyncio.create_task(step_client.status("r1", wait_s=60))
            # the monitor reads the heartbeat (and the server's boot id) before it marks the
            # instrument seen
            await _until(lambda: slot.last_seen is not None, "a first heartbeat")
            assert not poll.done()

            await server.stop()  # the action is cut off (as in a crash) ...
            server2 = InstrumentServer(AdderDriver("adder-1"), endpoint, journal_path=journal)
            for _ in range(200):  # ... and the server is back on the same endpoint
                try:
                    await server2.start()
                    break
                except zmq.ZMQError:
                    await asyncio.sleep(0.01)

            state = await asyncio.wait_for(poll, 20)
            assert state.state is RequestStatus.FAILED
            assert state.error is not None
            assert state.error.code == "interrupted"
            assert step_client.reconnects == 1
            restarted = [e for e in _events(factory) if e.kind == "instrument.restarted"]
            assert len(restarted) == 1
            assert restarted[0].instrument == "adder-1"
            assert "1 call(s) in flight sent again" in restarted[0].message
            data = restarted[0].data
            assert data["boot_id"]
            assert data["previous_boot_id"]
            assert data["boot_id"] != data["previous_boot_id"]
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            await step_client.close()
            await server.stop()
            if server2 is not None:
                await server2.stop()

    asyncio.run(asyncio.wait_for(body(), 60))


def test_clock_skew_raises_one_alarm_and_a_foreign_name_is_recorded(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    skew = {"now": timedelta(hours=1)}

    async def body() -> None:
        ctx = zmq.asyncio.Context.instance()
        peer = ctx.socket(zmq.ROUTER)
        peer.setsockopt(zmq.LINGER, 0)
        peer.bind("tcp://127.0.0.1:*")
        endpoint = peer.getsockopt_string(zmq.LAST_ENDPOINT)
        beats = 0

        async def answer() -> None:
            nonlocal beats
            uptime_s = 100.0
            while True:
                ident, frame = await peer.recv_multipart()
                msg = decode_message(frame)
                beats += 1
                uptime_s += 1.0
                body = {
                    "name": "furnace-9",
                    "state": "idle",
                    "busy_with": [],
                    "queue_length": 0,
                    "time": format_timestamp(datetime.now(UTC) + skew["now"]),
                    "uptime_s": uptime_s,
                }
                await peer.send_multipart([ident, encode_message("heartbeat.reply", msg.id, body)])

        task = asyncio.create_task(answer())
        desc = AdderDriver("furnace-9").describe()  # the server calls itself furnace-9
        slot = InstrumentSlot("furnace-1", "adder", endpoint, InstrumentClient(endpoint))
        slot.description = desc
        monitor = _monitor(slot, factory, campaign_id)
        watch = asyncio.create_task(monitor.watch(slot))
        try:
            await _until(lambda: beats >= 5, "five heartbeats")
            skew["now"] = timedelta(0)
            seen = beats
            await _until(lambda: beats >= seen + 3, "three more heartbeats")
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            await slot.client.close()
            task.cancel()
            peer.close(linger=0)

    asyncio.run(asyncio.wait_for(body(), 30))
    events = _events(factory)
    kinds = [e.kind for e in events]
    assert kinds.count("alarm.instrument_clock_skew") == 1  # once, not at every heartbeat
    alarm = next(e for e in events if e.kind == "alarm.instrument_clock_skew")
    assert alarm.instrument == "furnace-1"
    assert "ahead of the controller's" in alarm.message
    assert abs(alarm.data["skew_s"] - 3600) < 60
    assert kinds.count("instrument.clock_ok") == 1
    assert kinds.index("alarm.instrument_clock_skew") < kinds.index("instrument.clock_ok")
    mismatch = [e for e in events if e.kind == "instrument.name_mismatch"]
    assert len(mismatch) == 1
    assert mismatch[0].instrument == "furnace-1"
    assert mismatch[0].data["described_as"] == "furnace-9"
    assert "instrument.restarted" not in kinds  # the uptime only grew


@pytest.mark.parametrize(
    ("beats", "restarts"),
    [
        # no boot id: the uptime going down is the restart
        ([{"uptime_s": 50.0}, {"uptime_s": 51.0}, {"uptime_s": 0.5}, {"uptime_s": 1.5}], 1),
        # a boot id that changes is a restart even though the new server has been up longer
        # than the old one was (a quick crash, a slow heartbeat)
        (
            [
                {"uptime_s": 0.2, "boot_id": "a"},
                {"uptime_s": 0.3, "boot_id": "a"},
                {"uptime_s": 0.9, "boot_id": "b"},
                {"uptime_s": 1.0, "boot_id": "b"},
            ],
            1,
        ),
        # the same boot id whose uptime grows: no restart
        ([{"uptime_s": 5.0, "boot_id": "a"}, {"uptime_s": 6.0, "boot_id": "a"}], 0),
    ],
    ids=["uptime-down", "boot-id-changed", "steady"],
)
def test_restart_is_read_from_the_boot_id_or_else_the_uptime(
    factory: sessionmaker[Session], campaign_id: int, beats: list[dict[str, Any]], restarts: int
) -> None:
    desc = AdderDriver("adder-1").describe()

    async def body() -> None:
        ctx = zmq.asyncio.Context.instance()
        peer = ctx.socket(zmq.ROUTER)
        peer.setsockopt(zmq.LINGER, 0)
        peer.bind("tcp://127.0.0.1:*")
        endpoint = peer.getsockopt_string(zmq.LAST_ENDPOINT)
        served = 0

        async def answer() -> None:
            nonlocal served
            while True:
                ident, frame = await peer.recv_multipart()
                msg = decode_message(frame)
                if msg.type == "describe":
                    reply = ("describe.reply", desc.model_dump(mode="json"))
                else:
                    beat = beats[min(served, len(beats) - 1)]
                    served += 1
                    reply = ("heartbeat.reply", {"name": "adder-1", "state": "idle", **beat})
                await peer.send_multipart([ident, encode_message(reply[0], msg.id, reply[1])])

        task = asyncio.create_task(answer())
        slot = InstrumentSlot("adder-1", "adder", endpoint, InstrumentClient(endpoint))
        slot.description = desc
        monitor = _monitor(slot, factory, campaign_id)
        watch = asyncio.create_task(monitor.watch(slot))
        try:
            # every scripted beat answered, and the one after it read as well
            await _until(lambda: served > len(beats), "the scripted heartbeats")
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            await slot.client.close()
            task.cancel()
            peer.close(linger=0)

    asyncio.run(asyncio.wait_for(body(), 30))
    restarted = [e for e in _events(factory) if e.kind == "instrument.restarted"]
    assert len(restarted) == restarts
