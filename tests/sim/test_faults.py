"""Each injected fault class, one at a time (rate 1), against a real server socket."""

from __future__ import annotations

import asyncio
import json
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from instruments.client import InstrumentClient
from models.errors import InstrumentError
from models.instrument_spec import FaultSpec, InstrumentSpec, SimulatedInstrumentSpec
from sim.faults import CRASH_EXIT_CODE, SIM_FAULT, read_fault_log
from sim.serve import serve_instruments
from sim.worlds import get_world

REPO = Path(__file__).resolve().parents[2]
POINT = {"x1": 1.0, "x2": 2.0}
TRUE_Y = get_world("branin").evaluate_true(POINT)["y"]


def _spec(duration_s: float = 0.05, **faults: Any) -> InstrumentSpec:
    return InstrumentSpec(
        name="st",
        kind="station",
        simulated=SimulatedInstrumentSpec(
            world="branin", duration_s=duration_s, faults=FaultSpec(**faults)
        ),
    )


async def _with_server(
    tmp_path: Path, spec: InstrumentSpec, body: Any, timeout_s: float = 1.0
) -> list[dict[str, Any]]:
    running = await serve_instruments([spec], journal_dir=tmp_path)
    client = InstrumentClient(running.endpoints["st"], name="st", timeout_s=timeout_s)
    try:
        await body(client, running)
    finally:
        await client.close()
        await running.stop()
    return read_fault_log(tmp_path / "st.faults.jsonl")


def test_error_fails_the_action_with_a_retryable_code(tmp_path: Path) -> None:
    async def body(c: InstrumentClient, _: Any) -> None:
        state = await c.submit("r1", "measure", POINT, wait_s=2)
        assert state.state == "failed"
        assert state.error is not None
        assert state.error.code == SIM_FAULT
        assert state.error.retryable

    log = asyncio.run(_with_server(tmp_path, _spec(error_rate=1.0), body))
    assert [e["fault"] for e in log] == ["error"]
    assert log[0]["parameters"] == POINT


def test_hang_never_finishes_until_cancelled(tmp_path: Path) -> None:
    async def body(c: InstrumentClient, _: Any) -> None:
        state = await c.submit("r1", "measure", POINT, wait_s=0.5)
        assert state.state == "running"
        assert (await c.status("r1", wait_s=0.3)).state == "running"
        assert (await c.cancel("r1")).state == "cancelled"

    assert [e["fault"] for e in asyncio.run(_with_server(tmp_path, _spec(hang_rate=1.0), body))]


def test_slow_finishes_late_with_the_true_value(tmp_path: Path) -> None:
    async def body(c: InstrumentClient, _: Any) -> None:
        state = await c.submit("r1", "measure", POINT, wait_s=0.1)
        assert state.state == "running"  # 0.1 s would do without the fault, it needs 0.4 s
        state = await c.wait("r1", timeout_s=5)
        assert state.state == "completed"
        assert state.measurements[0].value == pytest.approx(TRUE_Y, abs=1e-12)

    spec = _spec(duration_s=0.1, slow_rate=1.0, slow_factor=4)
    assert [e["fault"] for e in asyncio.run(_with_server(tmp_path, spec, body))] == ["slow"]


def test_a_malformed_reply_is_counted_and_asked_again_at_once_and_the_action_runs_once(
    tmp_path: Path,
) -> None:
    async def body(c: InstrumentClient, _: Any) -> None:
        # its reply is garbled: the client counts it and sends the (idempotent) submit again
        state = await c.submit("r1", "measure", POINT, wait_s=2)
        assert state.state == "completed"
        assert (c.bad_replies, c.reconnects) == (1, 0)

    log = asyncio.run(_with_server(tmp_path, _spec(malformed_rate=1.0), body, timeout_s=0.5))
    assert [e["fault"] for e in log] == ["malformed"]


def test_bad_result_breaks_the_declared_outputs(tmp_path: Path) -> None:
    async def body(c: InstrumentClient, _: Any) -> None:
        state = await c.submit("r1", "measure", POINT, wait_s=2)
        assert state.state == "completed"
        assert [m.name for m in state.measurements] == ["undeclared_output"]

    asyncio.run(_with_server(tmp_path, _spec(bad_result_rate=1.0), body))


def test_drop_takes_the_server_off_the_network_and_brings_it_back(tmp_path: Path) -> None:
    async def body(c: InstrumentClient, _: Any) -> None:
        await c.submit("r1", "measure", POINT, wait_s=0)
        await asyncio.sleep(0.1)
        with pytest.raises(InstrumentError):
            await c.heartbeat()  # off the network
        for _ in range(30):  # back after drop_s: the first heartbeat that answers
            try:
                beat = await c.heartbeat()
                break
            except InstrumentError:
                continue
        else:
            raise AssertionError("the server never came back on the network")
        assert beat["name"] == "st"
        assert (await c.wait("r1", timeout_s=5)).state == "completed"  # the action went on

    spec = _spec(drop_rate=1.0, drop_s=0.8)
    asyncio.run(_with_server(tmp_path, spec, body, timeout_s=0.3))


def _ready(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    assert ready, "server did not start"
    return str(json.loads(proc.stdout.readline())["endpoints"]["st"])


def test_crash_exits_mid_action_and_the_restarted_server_says_interrupted(
    tmp_path: Path,
) -> None:
    sim = tmp_path / "sim.toml"
    sim.write_text(
        '[[instruments]]\nname = "st"\nkind = "station"\n'
        '[instruments.simulated]\nworld = "branin"\nduration_s = 0.4\n'
        "[instruments.simulated.faults]\ncrash_rate = 1.0\n"
    )
    cmd = [sys.executable, "-m", "sim.serve", str(sim), "--journal-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    endpoint = _ready(proc)

    async def submit() -> None:
        c = InstrumentClient(endpoint, name="st", timeout_s=2)
        try:
            assert (await c.submit("r1", "measure", POINT, wait_s=0)).state in (
                "queued",
                "running",
            )
        finally:
            await c.close()

    asyncio.run(submit())
    assert proc.wait(30) == CRASH_EXIT_CODE
    assert proc.stdout is not None
    proc.stdout.close()
    # started again on the same endpoint, as the supervisor of `sdlab run` does
    again = subprocess.Popen(
        [*cmd, "--bind", endpoint], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert _ready(again) == endpoint

        async def ask() -> None:
            c = InstrumentClient(endpoint, name="st", timeout_s=2)
            try:
                state = await c.status("r1")
                assert state.state == "failed"
                assert state.error is not None
                assert state.error.code == "interrupted"
            finally:
                await c.close()

        asyncio.run(ask())
    finally:
        again.terminate()
        again.wait(30)
        if again.stdout:
            again.stdout.close()
    assert [e["fault"] for e in read_fault_log(tmp_path / "st.faults.jsonl")] == ["crash"]
