"""A serial hot plate: one driver, two backends (the built-in example of docs/drivers.md).

The driver speaks the line protocol of a stirring hot plate over a serial port. It talks
only to a :class:`~instruments.serial_line.LineBackend`: on the hardware that is a
:class:`~instruments.serial_line.SerialLineBackend` (pyserial), and with ``simulated = true``
(or ``sdlab run --simulate``) it is :class:`SimulatedHotplate`, which implements the same
protocol in memory. A dry run therefore exercises every line of the driver that will run
the hardware: the commands, the parsing, the waiting, the errors.

The protocol (one ASCII line each way, ``\\n``-terminated)::

    *IDN?          -> "SDLAB,HP-1,<serial>,<firmware>"
    SET <deg C>    -> "OK"              set the plate setpoint (heater on)
    TEMP?          -> "<deg C>"         the plate temperature now
    STOP           -> "OK"              heater off
    anything else  -> "ERR <reason>"

Gateway file entry::

    [[instruments]]
    name = "hotplate-1"
    kind = "hotplate"
    driver = "serial-hotplate"
    options = { port = "/dev/ttyUSB0", baudrate = 9600 }
    # simulated = true      # the same driver on its simulated backend
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from instruments.driver import (
    ActionSpec,
    BlockingDriver,
    OutputSpec,
    ParameterLimit,
    register_driver,
)
from instruments.serial_line import LineBackend, SerialLineBackend
from models.errors import InstrumentError
from models.records import Measurement

logger = logging.getLogger(__name__)

AMBIENT_C = 25.0
"""Temperature of a cold plate, in degC."""


class HotplateOptions(BaseModel):
    """The ``options`` of a ``serial-hotplate`` instrument.

    Attributes:
        port: Serial device or pyserial URL (unused when simulated).
        baudrate: Line speed, in baud.
        timeout_s: Longest wait for one reply line, in seconds.
        max_setpoint_c: Hottest setpoint the lab allows on this plate, in degC (the action
            declares it as its limit, so the controller's safety gate refuses more).
        tolerance_c: How close to the setpoint counts as reached, in degC.
        poll_s: Interval between two temperature reads while heating, in seconds.
        settle_timeout_s: Longest wait for the setpoint to be reached, in seconds.
        sim_time_constant_s: The simulated plate's heating time constant, in seconds.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    port: str = "/dev/ttyUSB0"
    baudrate: int = Field(default=9600, gt=0)
    timeout_s: float = Field(default=2.0, gt=0, le=60)
    max_setpoint_c: float = Field(default=340.0, gt=AMBIENT_C, le=550.0)
    tolerance_c: float = Field(default=1.0, gt=0)
    poll_s: float = Field(default=0.5, gt=0, le=60)
    settle_timeout_s: float = Field(default=600.0, gt=0)
    sim_time_constant_s: float = Field(default=2.0, gt=0)


class SimulatedHotplate:
    """The hot plate's line protocol in memory: the driver's simulated backend.

    The plate temperature follows a first-order lag towards the setpoint with time constant
    ``time_constant_s`` (in wall-clock seconds), so the driver's polling meets the same
    approach it meets on the hardware.

    Args:
        time_constant_s: Heating time constant, in seconds.
        clock: Returns seconds (default ``time.monotonic``).
    """

    def __init__(self, time_constant_s: float = 2.0, clock: Any = time.monotonic) -> None:
        self.time_constant_s = time_constant_s
        self._clock = clock
        self._lock = threading.Lock()
        self._open = False
        self._setpoint = AMBIENT_C
        self._t0 = clock()
        self._from_c = AMBIENT_C
        self.commands: list[str] = []
        """Every command received, in order (what a protocol analyser would show)."""

    def _temperature(self) -> float:
        elapsed = self._clock() - self._t0
        lag = math.exp(-elapsed / self.time_constant_s)
        return self._setpoint + (self._from_c - self._setpoint) * lag

    def open(self) -> None:
        """Power the simulated plate up."""
        self._open = True

    def query(self, command: str) -> str:
        """Answer one command line as the hot plate's firmware does."""
        with self._lock:
            if not self._open:
                raise InstrumentError("hotplate", "io_error", "serial port is not open")
            self.commands.append(command)
            verb, _, arg = command.strip().partition(" ")
            if verb == "*IDN?":
                return "SDLAB,HP-1,SIM0001,1.0"
            if verb == "TEMP?":
                return f"{self._temperature():.3f}"
            if verb in ("SET", "STOP"):
                try:
                    target = AMBIENT_C if verb == "STOP" else float(arg)
                except ValueError:
                    return f"ERR bad number {arg!r}"
                self._from_c, self._t0, self._setpoint = self._temperature(), self._clock(), target
                return "OK"
            return f"ERR unknown command {verb!r}"

    def close(self) -> None:
        """Power the simulated plate down."""
        self._open = False


@register_driver("serial-hotplate")
class SerialHotplate(BlockingDriver):
    """A stirring hot plate on a serial line (see the module docstring for the protocol).

    Actions:
        ``heat``: set ``setpoint_c``, wait until the plate is within ``tolerance_c`` of it,
        hold ``hold_s`` while sampling, and return the mean and spread of the plate
        temperature. Not retry-safe: heating a sample twice changes it.
        ``read``: the plate temperature now (retry-safe).

    Safe state: ``STOP`` (heater off).
    """

    version = "1"
    Options = HotplateOptions
    supports_simulation = True

    def __init__(
        self,
        name: str,
        options: BaseModel | Mapping[str, Any] | None = None,
        *,
        simulated: bool = False,
    ) -> None:
        super().__init__(name, options, simulated=simulated)
        opts = self.options
        assert isinstance(opts, HotplateOptions)
        self.opts = opts
        self.backend: LineBackend
        if simulated:
            self.backend = SimulatedHotplate(opts.sim_time_constant_s)
        else:
            self.backend = SerialLineBackend(
                name, opts.port, baudrate=opts.baudrate, timeout_s=opts.timeout_s
            )

    def actions(self) -> list[ActionSpec]:
        """``heat`` and ``read``, with the lab's setpoint limit."""
        temperature = OutputSpec(name="temperature_c", unit="degC")
        heat_timeout = self.opts.settle_timeout_s + 3600.0 + 60.0
        return [
            ActionSpec(
                name="heat",
                parameters=[
                    ParameterLimit(
                        name="setpoint_c",
                        minimum=AMBIENT_C,
                        maximum=self.opts.max_setpoint_c,
                        unit="degC",
                    ),
                    ParameterLimit(
                        name="hold_s", minimum=0.0, maximum=3600.0, unit="s", required=False
                    ),
                ],
                outputs=[temperature, OutputSpec(name="spread_c", unit="degC")],
                timeout_s=heat_timeout,
                retry_safe=False,
                description="Heat to setpoint_c, hold hold_s, report the plate temperature.",
            ),
            ActionSpec(
                name="read",
                outputs=[temperature],
                timeout_s=max(5.0, 3 * self.opts.timeout_s),
                retry_safe=True,
                description="Read the plate temperature.",
            ),
        ]

    def _ask(self, command: str) -> str:
        reply = self.backend.query(command)
        if reply.startswith("ERR"):
            raise InstrumentError(self.name, "action_failed", f"{command!r}: {reply}")
        return reply

    def _temperature(self) -> float:
        reply = self._ask("TEMP?")
        try:
            return float(reply)
        except ValueError:
            raise InstrumentError(
                self.name, "bad_reply", f"TEMP? answered {reply!r}, not a number", retryable=True
            ) from None

    def connect_blocking(self) -> None:
        """Open the port and check that a hot plate answers."""
        self.backend.open()
        idn = self._ask("*IDN?")
        if not idn.startswith("SDLAB,HP-"):
            raise InstrumentError(self.name, "io_error", f"not a hot plate: *IDN? -> {idn!r}")
        logger.info("instrument %s: %s%s", self.name, idn, " (simulated)" if self.simulated else "")

    def run_blocking(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Run ``heat`` or ``read`` (parameters already checked by the server)."""
        if action == "read":
            return [Measurement(name="temperature_c", value=self._temperature(), unit="degC")]
        if action != "heat":
            raise InstrumentError(self.name, "unknown_action", f"no action {action!r}")
        setpoint = float(parameters["setpoint_c"])
        hold_s = float(parameters.get("hold_s", 0.0))
        self._ask(f"SET {setpoint:.2f}")
        deadline = time.monotonic() + self.opts.settle_timeout_s
        while abs(self._temperature() - setpoint) > self.opts.tolerance_c:
            if time.monotonic() > deadline:
                raise InstrumentError(
                    self.name,
                    "action_failed",
                    f"{setpoint:g} degC not reached within {self.opts.settle_timeout_s:g} s",
                )
            time.sleep(self.opts.poll_s)
        samples = [self._temperature()]
        end = time.monotonic() + hold_s
        while time.monotonic() < end:
            time.sleep(min(self.opts.poll_s, max(0.0, end - time.monotonic())))
            samples.append(self._temperature())
        spread = statistics.pstdev(samples) if len(samples) > 1 else 0.0
        return [
            Measurement(name="temperature_c", value=statistics.fmean(samples), unit="degC"),
            Measurement(name="spread_c", value=spread, unit="degC"),
        ]

    def safe_state_blocking(self) -> str:
        """Switch the heater off."""
        self._ask("STOP")
        return "heater off (STOP sent)"

    def close_blocking(self) -> None:
        """Close the port."""
        self.backend.close()
