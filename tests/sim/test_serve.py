"""Tests of sim.serve: simulated instruments served over the real protocol."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from instruments.client import InstrumentClient
from models.errors import InstrumentError, InvalidCampaignError
from models.instrument_spec import InstrumentSpec, SimulatedInstrumentSpec
from sim.serve import main, serve_instruments
from sim.worlds import get_world

REPO = Path(__file__).resolve().parents[2]

TOML = """
[[instruments]]
name = "station-a"
kind = "objective"
address = "tcp://127.0.0.1:*"
[instruments.simulated]
world = "hartmann6"
noise_std = 0.0

[[instruments]]
name = "station-b"
kind = "objective"
[instruments.simulated]
world = "branin"
noise_std = 0.5
seed = 1
"""

H_POINT = {"x1": 0.1, "x2": 0.9, "x3": 0.3, "x4": 0.4, "x5": 0.7, "x6": 0.2}
B_POINT = {"x1": 1.0, "x2": 2.0}


def _spec(name: str, world: str, **sim: Any) -> InstrumentSpec:
    return InstrumentSpec(
        name=name,
        kind="objective",
        simulated=SimulatedInstrumentSpec(world=world, **sim),
    )


# ---------------------------------------------------------------------- in process


def test_serve_instruments_in_process(tmp_path: Path) -> None:
    specs = [_spec("a", "hartmann6"), _spec("b", "branin", noise_std=0.5, seed=2)]

    async def go() -> None:
        async with await serve_instruments(specs, journal_dir=tmp_path / "j") as running:
            endpoints = running.endpoints
            assert set(endpoints) == {"a", "b"}
            assert all(e.startswith("tcp://127.0.0.1:") for e in endpoints.values())
            async with InstrumentClient(endpoints["a"], name="a") as client:
                desc = await client.describe()
                assert desc.name == "a"
                assert desc.action("measure").parameters == get_world("hartmann6").parameters()
                state = await client.submit("r1", "measure", dict(H_POINT), wait_s=5.0)
                assert state.terminal
                [m] = state.measurements
                assert m.value == get_world("hartmann6").evaluate_true(H_POINT)["y"]
                # The server enforces the limits the driver declares.
                with pytest.raises(InstrumentError) as info:
                    await client.submit("r2", "measure", {**H_POINT, "x1": 1.5}, wait_s=1.0)
                assert info.value.code == "parameter_out_of_limits"
            async with InstrumentClient(endpoints["b"], name="b") as client:
                state = await client.submit("r1", "measure", dict(B_POINT), wait_s=5.0)
                [m] = state.measurements
                assert m.uncertainty == 0.5
                assert m.value != get_world("branin").evaluate_true(B_POINT)["y"]

    asyncio.run(go())
    lines = (tmp_path / "j" / "a.jsonl").read_text().splitlines()
    # the journal records each action when it starts and when it ends
    assert [(json.loads(x)["request_id"], json.loads(x)["state"]) for x in lines] == [
        ("r1", "running"),
        ("r1", "completed"),
    ]
    assert (tmp_path / "j" / "b.jsonl").exists()


@pytest.mark.parametrize("driver", ["objective-station", "sim-furnace"])
def test_the_gateway_hosts_each_measuring_simulator(driver: str) -> None:
    # the gateway builds every driver with simulated=...; the furnace once refused it
    spec = _spec("a", "branin", driver=driver)

    async def go() -> None:
        running = await serve_instruments([spec])
        async with running, InstrumentClient(running.endpoints["a"], timeout_s=5) as client:
            desc = await client.describe()
            assert desc.driver == driver
            state = await client.submit("r1", "measure", B_POINT, wait_s=5)
            assert state.state == "completed"
            y = {m.name: m.value for m in state.measurements}["y"]
            assert y == get_world("branin").evaluate_true(B_POINT)["y"]

    asyncio.run(go())


def test_bad_world_names_key_path() -> None:
    specs = [_spec("a", "hartmann6"), _spec("b", "no-such-world")]

    async def go() -> None:
        await serve_instruments(specs, journal_dir=None)

    with pytest.raises(InvalidCampaignError) as info:
        asyncio.run(go())
    assert info.value.problems[0].key == "instruments[1].simulated.world"


def test_address_in_use_names_key_path() -> None:
    async def go() -> None:
        async with await serve_instruments([_spec("a", "branin")]) as first:
            taken = first.endpoints["a"]
            spec = _spec("b", "branin").model_copy(update={"address": taken})
            await serve_instruments([spec])

    with pytest.raises(InvalidCampaignError) as info:
        asyncio.run(go())
    assert info.value.problems[0].key == "instruments[0].address"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (TOML.replace("noise_std = 0.0", "noise_std = -1.0"), "instruments[0].simulated.noise_std"),
        (TOML.replace('"branin"', '"nope"'), "instruments[1].simulated.world"),
        (
            TOML.replace('kind = "objective"\naddress', 'kin = "objective"\naddress'),
            "instruments[0]",
        ),
        ("[[instruments]]\nname = 'x'\nkind = 'k'\naddress = 'tcp://127.0.0.1:1'\n", "simulated"),
    ],
)
def test_main_bad_file_exits_2_naming_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(text)
    assert main([str(path)]) == 2
    captured = capsys.readouterr()
    assert key in captured.err
    assert captured.out == ""


def test_main_unknown_only_name_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(TOML)
    assert main([str(path), "--only", "station-z"]) == 2
    err = capsys.readouterr().err
    assert "--only" in err
    assert "station-z" in err


def test_main_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "absent.toml")]) == 2
    assert "file not found" in capsys.readouterr().err


# ---------------------------------------------------------------------- subprocess


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "sim.serve", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ready_line(proc: subprocess.Popen[str], timeout_s: float = 60.0) -> dict[str, Any]:
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], timeout_s)
    if not readable:
        proc.kill()
        pytest.fail(f"no ready line; stderr: {proc.communicate()[1]}")
    line = proc.stdout.readline()
    if not line:
        pytest.fail(f"server exited {proc.wait()}: {proc.communicate()[1]}")
    ready = json.loads(line)
    assert isinstance(ready, dict)
    return ready


def _finish(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str, str]:
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"server did not stop on {sig.name}: {err}")
    return proc.returncode, out, err


@pytest.mark.slow
def test_serve_subprocess_end_to_end(tmp_path: Path) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(TOML)
    journal_dir = tmp_path / "journal"
    proc = _spawn(str(path), "--journal-dir", str(journal_dir))
    try:
        ready = _ready_line(proc)
        assert ready["ready"] is True
        endpoints = ready["endpoints"]
        assert set(endpoints) == {"station-a", "station-b"}

        async def talk() -> None:
            async with InstrumentClient(endpoints["station-a"], name="station-a") as client:
                desc = await client.describe()
                assert desc.driver == "objective-station"
                assert desc.action("measure").parameters == get_world("hartmann6").parameters()
                state = await client.submit("exp-1", "measure", dict(H_POINT), wait_s=10.0)
                assert state.terminal
                [m] = state.measurements
                assert m.value == get_world("hartmann6").evaluate_true(H_POINT)["y"]
                again = await client.submit("exp-1", "measure", dict(H_POINT), wait_s=10.0)
                assert again.measurements == state.measurements
            async with InstrumentClient(endpoints["station-b"], name="station-b") as client:
                state = await client.submit("exp-1", "measure", dict(B_POINT), wait_s=10.0)
                assert state.measurements[0].uncertainty == 0.5

        asyncio.run(talk())
    finally:
        code, out, err = _finish(proc, signal.SIGTERM)
    assert code == 0, err
    assert out == ""  # exactly one line on stdout, already read
    journal = (journal_dir / "station-a.jsonl").read_text().splitlines()
    assert [(json.loads(x)["request_id"], json.loads(x)["state"]) for x in journal] == [
        ("exp-1", "running"),
        ("exp-1", "completed"),
    ]


@pytest.mark.slow
def test_serve_subprocess_only_and_sigint(tmp_path: Path) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(TOML)
    proc = _spawn(str(path), "--only", "station-b")
    try:
        ready = _ready_line(proc)
        assert list(ready["endpoints"]) == ["station-b"]
    finally:
        code, _, err = _finish(proc, signal.SIGINT)
    assert code == 0, err


@pytest.mark.slow
def test_serve_subprocess_bad_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(TOML.replace("noise_std = 0.5", "noise_std = 'loud'"))
    proc = _spawn(str(path))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "instruments[1].simulated.noise_std" in err
    assert out == ""
