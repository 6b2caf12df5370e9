"""The serial hot plate: one driver, two backends (instruments/hotplate.py).

The real backend is exercised over a real pseudo-terminal with pyserial, the hot plate's
firmware answering on the other end; the simulated backend in memory. The driver code is
the same in both.
"""

from __future__ import annotations

import asyncio
import os
import threading
import tty
from collections.abc import Iterator

import pytest

from instruments.hotplate import SerialHotplate, SimulatedHotplate
from instruments.serial_line import SerialLineBackend
from models.errors import InstrumentError

FAST = {"poll_s": 0.01, "sim_time_constant_s": 0.05, "timeout_s": 2.0}


class Firmware:
    """The hot plate's firmware on the far end of a pty: :class:`SimulatedHotplate`'s
    protocol, read and written byte by byte as a serial device would."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)  # a serial line: no echo, no line editing
        self.port = os.ttyname(slave)
        self._slave = slave
        self.plate = SimulatedHotplate(time_constant_s=0.05)
        self.plate.open()
        self.silent = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self.master, 256)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if self.silent:
                    continue
                reply = self.plate.query(line.decode("ascii").strip())
                os.write(self.master, reply.encode("ascii") + b"\n")

    def close(self) -> None:
        os.close(self._slave)
        os.close(self.master)


@pytest.fixture
def firmware() -> Iterator[Firmware]:
    fw = Firmware()
    yield fw
    fw.close()


def _heat(driver: SerialHotplate, setpoint: float) -> tuple[float, str]:
    async def go() -> tuple[float, str]:
        await driver.connect()
        try:
            temperature, _spread = await driver.run("heat", {"setpoint_c": setpoint})
            return float(temperature.value or 0.0), await driver.safe_state()
        finally:
            await driver.close()

    return asyncio.run(go())


def test_the_driver_on_the_hardware_backend_over_a_real_serial_line(firmware: Firmware) -> None:
    driver = SerialHotplate("hp", {**FAST, "port": firmware.port})
    assert isinstance(driver.backend, SerialLineBackend)
    reached, safe = _heat(driver, 90.0)
    assert reached == pytest.approx(90.0, abs=1.0)
    assert safe == "heater off (STOP sent)"
    assert firmware.plate.commands[:2] == ["*IDN?", "SET 90.00"]
    assert firmware.plate.commands[-1] == "STOP"


def test_the_same_driver_on_its_simulated_backend() -> None:
    driver = SerialHotplate("hp", FAST, simulated=True)
    assert isinstance(driver.backend, SimulatedHotplate)
    reached, _ = _heat(driver, 90.0)
    assert reached == pytest.approx(90.0, abs=1.0)
    assert driver.backend.commands[:2] == ["*IDN?", "SET 90.00"]


def test_a_silent_instrument_is_a_retryable_timeout(firmware: Firmware) -> None:
    driver = SerialHotplate("hp", {**FAST, "port": firmware.port, "timeout_s": 0.2})

    async def go() -> None:
        await driver.connect()
        firmware.silent = True
        try:
            with pytest.raises(InstrumentError) as info:
                await driver.run("read", {})
            assert info.value.code == "timeout"
            assert info.value.retryable
        finally:
            await driver.close()

    asyncio.run(go())


def test_a_missing_port_fails_connect_naming_it() -> None:
    driver = SerialHotplate("hp", {"port": "/nonexistent/ttyUSB7"})
    with pytest.raises(InstrumentError, match="/nonexistent/ttyUSB7"):
        asyncio.run(driver.connect())
