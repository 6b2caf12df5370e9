"""The gateway (instruments/gateway.py): any registered driver, several per process."""

from __future__ import annotations

import asyncio
import json
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from instruments.client import InstrumentClient
from instruments.gateway import main, serve_gateway
from models.errors import InvalidCampaignError
from models.gateway import load_gateway
from sim.drivers import load_builtin_drivers

REPO = Path(__file__).resolve().parents[2]

LAB = """
[[instruments]]
name = "plate-1"
kind = "hotplate"
driver = "serial-hotplate"
simulated = true
options = { poll_s = 0.01, sim_time_constant_s = 0.05, max_setpoint_c = 200.0 }

[[instruments]]
name = "plate-2"
kind = "hotplate"
driver = "serial-hotplate"
options = { port = "/nonexistent/ttyUSB9", poll_s = 0.01, sim_time_constant_s = 0.05 }

[[instruments]]
name = "station"
kind = "objective"
[instruments.simulated]
world = "branin"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab.toml"
    path.write_text(text)
    return path


def test_several_drivers_one_process_each_its_endpoint(tmp_path: Path) -> None:
    load_builtin_drivers()  # the simulator entry; sdlab's entry points name it too
    lab = load_gateway(_write(tmp_path, LAB))

    async def go() -> None:
        # --simulate: plate-2's port does not exist, so only its simulated backend runs
        async with await serve_gateway(lab, simulate=True, journal_dir=tmp_path / "j") as gw:
            assert set(gw.endpoints) == {"plate-1", "plate-2", "station"}
            assert len(set(gw.endpoints.values())) == 3
            async with InstrumentClient(gw.endpoints["plate-1"], name="plate-1") as c:
                desc = await c.describe()
                assert desc.driver == "serial-hotplate"
                heat = desc.action("heat")
                assert heat.parameters[0].maximum == 200.0  # the option became the limit
                state = await c.submit("r1", "heat", {"setpoint_c": 60.0}, wait_s=20)
                assert state.state.value == "completed", state
                assert state.measurements[0].value == pytest.approx(60.0, abs=1.0)
                with pytest.raises(Exception, match="maximum 200"):
                    await c.submit("r2", "heat", {"setpoint_c": 250.0}, wait_s=1)
            async with InstrumentClient(gw.endpoints["station"], name="station") as c:
                state = await c.submit("r1", "measure", {"x1": 1.0, "x2": 2.0}, wait_s=5)
                assert state.state.value == "completed"

    asyncio.run(go())
    assert (tmp_path / "j" / "plate-1.jsonl").exists()


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (("poll_s = 0.01", "poll_s = 'fast'"), "instruments[0].options.poll_s", "number"),
        (("poll_s = 0.01", "pol_s = 0.01"), "instruments[0].options.pol_s", "unknown key"),
        (
            ('driver = "serial-hotplate"\nsimulated', 'driver = "no-such"\nsimulated'),
            "instruments[0].driver",
            "unknown driver 'no-such'",
        ),
        (('world = "branin"', 'world = "nope"'), "instruments[2].simulated.world", "nope"),
    ],
)
def test_a_bad_entry_exits_2_naming_file_key_and_problem(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: tuple[str, str],
    key: str,
    problem: str,
) -> None:
    load_builtin_drivers()
    path = _write(tmp_path, LAB.replace(*change, 1))
    assert main([str(path), "--simulate"]) == 2
    captured = capsys.readouterr()
    assert str(path) in captured.err
    assert key in captured.err
    assert problem in captured.err
    assert captured.out == ""  # nothing started: no ready line


def test_a_driver_without_a_simulated_backend_cannot_be_simulated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # objective-station is a simulator; ask a plain hardware driver instead: none is
    # built in without a backend, so check the message on the entry's key path through
    # a driver that declares no simulation
    from instruments.driver import DRIVERS, ActionSpec, Driver

    class HardwareOnly(Driver):
        def actions(self) -> list[ActionSpec]:
            return []

        async def run(self, action: str, parameters: object) -> list:  # type: ignore[type-arg]
            return []

    if "test-hardware-only" not in DRIVERS:
        DRIVERS.register("test-hardware-only")(HardwareOnly)
    path = _write(
        tmp_path,
        '[[instruments]]\nname = "h"\nkind = "k"\ndriver = "test-hardware-only"\n'
        "simulated = true\n",
    )
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "instruments[0].driver" in err
    assert "no simulated backend" in err


def test_a_driver_that_cannot_connect_stops_the_gateway_naming_its_options(
    tmp_path: Path,
) -> None:
    lab = load_gateway(_write(tmp_path, LAB)).only(["plate-1", "plate-2"])

    async def go() -> None:
        await serve_gateway(lab)  # plate-2 is not simulated: its port does not exist

    with pytest.raises(InvalidCampaignError) as info:
        asyncio.run(go())
    [problem] = info.value.problems
    key, message = problem.key, problem.message
    assert key == "instruments[1].options"
    assert "/nonexistent/ttyUSB9" in message


def test_entries_without_a_driver_are_refused(tmp_path: Path) -> None:
    path = _write(
        tmp_path, '[[instruments]]\nname = "r"\nkind = "k"\naddress = "tcp://127.0.0.1:1"\n'
    )
    with pytest.raises(InvalidCampaignError) as info:
        load_gateway(path)
    assert info.value.problems[0].key == "instruments[0].driver"


@pytest.mark.slow
def test_sdlab_instruments_serve_hosts_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, LAB)
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.cli", "instruments", "serve", str(path), "--simulate"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], 120)
        assert readable, "no ready line"
        ready = json.loads(proc.stdout.readline())
        assert set(ready["endpoints"]) == {"plate-1", "plate-2", "station"}

        async def talk() -> None:
            async with InstrumentClient(ready["endpoints"]["plate-2"], name="plate-2") as c:
                state = await c.submit("r1", "read", {}, wait_s=10)
                assert state.measurements[0].value == pytest.approx(25.0)

        asyncio.run(talk())
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
