"""Line-protocol backends for serial instruments: one real (pyserial), the contract both share.

Many bench instruments (hot plates, syringe pumps, temperature controllers, balances) speak
a line protocol over RS-232 or USB serial: the host writes one ASCII command ending in a
newline, the instrument answers one line. A driver written against :class:`LineBackend`
runs unchanged on the hardware (:class:`SerialLineBackend`) or on a simulated twin that
implements the same protocol in memory, so a dry run exercises the driver's own code
(the way ophyd-async devices connect with ``mock=True``).

Every call blocks: drivers using a line backend derive from
:class:`~instruments.driver.BlockingDriver`, so the calls run in a worker thread.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from models.errors import InstrumentError

logger = logging.getLogger(__name__)


class LineBackend(Protocol):
    """A link that sends one command line and reads one reply line (blocking)."""

    def open(self) -> None:
        """Open the link."""

    def query(self, command: str) -> str:
        """Send ``command`` (without newline) and return the reply line (without newline).

        Raises:
            InstrumentError: ``timeout`` if no reply came in time, ``io_error`` if the
                link failed.
        """

    def close(self) -> None:
        """Close the link (closing twice does nothing)."""


class SerialLineBackend:
    """A :class:`LineBackend` over a serial port, with pyserial.

    Queries are serialised by a lock, so an emergency stop sent from another thread never
    interleaves with a running query.

    Args:
        instrument: The instrument's name, for errors.
        port: The serial device (``/dev/ttyUSB0``, ``COM3``) or a pyserial URL
            (``socket://host:port``, ``loop://``).
        baudrate: Line speed, in baud.
        timeout_s: How long one reply may take, in seconds.
        newline: The line terminator the instrument uses.
        encoding: Character encoding of the lines.
    """

    def __init__(
        self,
        instrument: str,
        port: str,
        *,
        baudrate: int = 9600,
        timeout_s: float = 2.0,
        newline: str = "\n",
        encoding: str = "ascii",
    ) -> None:
        self.instrument = instrument
        self.port = port
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        self.newline = newline
        self.encoding = encoding
        self._serial: object | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """Open the port.

        Raises:
            InstrumentError: ``io_error`` if the port cannot be opened.
        """
        import serial  # pyserial: the [lab] extra

        try:
            self._serial = serial.serial_for_url(
                self.port, baudrate=self.baudrate, timeout=self.timeout_s
            )
        except (serial.SerialException, ValueError) as exc:
            raise InstrumentError(
                self.instrument, "io_error", f"cannot open {self.port!r}: {exc}"
            ) from exc
        logger.info("instrument %s: serial port %s open", self.instrument, self.port)

    def query(self, command: str) -> str:
        """Send one command line and read the reply line; see :meth:`LineBackend.query`."""
        import serial

        port = self._serial
        if port is None:
            raise InstrumentError(self.instrument, "io_error", "serial port is not open")
        terminator = self.newline.encode(self.encoding)
        with self._lock:
            try:
                port.reset_input_buffer()  # type: ignore[attr-defined]
                port.write(command.encode(self.encoding) + terminator)  # type: ignore[attr-defined]
                raw: bytes = port.read_until(terminator)  # type: ignore[attr-defined]
            except serial.SerialException as exc:
                raise InstrumentError(
                    self.instrument, "io_error", f"{command!r}: {exc}", retryable=True
                ) from exc
        if not raw.endswith(terminator):
            raise InstrumentError(
                self.instrument,
                "timeout",
                f"no reply to {command!r} within {self.timeout_s:g} s (got {raw!r})",
                retryable=True,
            )
        return raw[: -len(terminator)].decode(self.encoding, errors="replace").strip()

    def close(self) -> None:
        """Close the port."""
        port, self._serial = self._serial, None
        if port is not None:
            port.close()  # type: ignore[attr-defined]
