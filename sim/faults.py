"""Fault injection for simulated instruments.

A weekend campaign meets every fault a lab has: a controller that stops answering, a
diffractometer that returns garbage, a PC that reboots. A simulated instrument whose
``[instruments.simulated.faults]`` table sets rates (:class:`~models.campaign.FaultSpec`)
injects them, deterministically: one draw per submitted action from a generator seeded per
instrument, so the k-th action of an instrument always meets the same fault and a failing
test can be replayed.

Faults of the action (:class:`FaultyDriver` wraps the real simulated driver): ``error``,
``hang``, ``slow``, ``bad_result``, ``crash`` (the process exits mid-action). Faults of the
link (:class:`FaultyServer`, an :class:`~instruments.server.InstrumentServer` that can
misbehave): ``malformed`` (the answer to a submit is not a protocol message) and ``drop``
(the socket is closed for a while, then bound again on the same endpoint).

Every injected fault is appended to ``<journal_dir>/<name>.faults.jsonl`` (flushed before a
crash), so tests and the reliability figures count what was injected, not what was planned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import zmq
import zmq.asyncio

from instruments.driver import ActionSpec, Driver
from instruments.server import InstrumentServer
from models.errors import InstrumentError
from models.instrument_spec import FaultSpec
from models.records import Measurement
from sim.noise import seed_from_name

logger = logging.getLogger(__name__)

CRASH_EXIT_CODE = 70
"""Exit status of a server process that a ``crash`` fault killed."""

SIM_FAULT = "sim_fault"
"""Error code of an injected ``error`` fault."""


class Fault(StrEnum):
    """The kinds of fault a simulated instrument can inject, in draw order."""

    ERROR = "error"
    HANG = "hang"
    SLOW = "slow"
    MALFORMED = "malformed"
    BAD_RESULT = "bad_result"
    CRASH = "crash"
    DROP = "drop"


class FaultPlan:
    """Seeded draws of which fault, if any, the next action meets.

    Args:
        spec: The rates.
        name: The instrument's name (seeds the generator when ``spec.seed`` is unset).
        log_path: JSON-lines file each injected fault is appended to, or ``None``.
    """

    def __init__(self, spec: FaultSpec, name: str, log_path: Path | None = None) -> None:
        self.spec = spec
        self.name = name
        self._rng = random.Random(spec.seed if spec.seed is not None else seed_from_name(name))
        self._rates = [(f, float(getattr(spec, f"{f.value}_rate"))) for f in Fault]
        self.counts: dict[Fault, int] = dict.fromkeys(Fault, 0)
        self._log: IO[str] | None = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = log_path.open("a", encoding="utf-8")

    def draw(self) -> Fault | None:
        """The fault the next action meets (one uniform draw per action)."""
        u = self._rng.random()
        edge = 0.0
        for fault, rate in self._rates:
            edge += rate
            if u < edge:
                return fault
        return None

    def record(self, fault: Fault, action: str, parameters: Mapping[str, Any]) -> None:
        """Count an injected fault and append it to the log (flushed and synced)."""
        self.counts[fault] += 1
        logger.warning("instrument %s: injecting fault %s into %s", self.name, fault, action)
        if self._log is not None:
            line: dict[str, Any] = {"t": time.time(), "fault": fault.value, "action": action}
            line["parameters"] = dict(parameters)
            self._log.write(json.dumps(line, default=str) + "\n")
            self._log.flush()
            with contextlib.suppress(OSError):
                os.fsync(self._log.fileno())

    def close(self) -> None:
        """Close the log."""
        if self._log is not None:
            self._log.close()
            self._log = None


def read_fault_log(path: Path) -> list[dict[str, Any]]:
    """The faults a server injected, from its ``.faults.jsonl`` file (empty if none)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


class FaultyDriver(Driver):
    """A driver that injects faults into another driver's actions.

    It describes itself exactly as the wrapped driver does, so the controller cannot tell
    it from the well-behaved one until a fault happens.

    Args:
        inner: The driver whose actions are faulted.
        plan: The fault draws.
        duration_s: The inner action's normal duration (a slow action lasts
            ``slow_factor`` times as long; a crash happens half-way through).
    """

    def __init__(self, inner: Driver, plan: FaultPlan, duration_s: float) -> None:
        super().__init__(inner.name)
        self.inner = inner
        self.plan = plan
        self.duration_s = duration_s
        self.driver_name = inner.driver_name  # type: ignore[misc]  # per instance, on purpose
        self.version = inner.version  # type: ignore[misc]
        self.server: FaultyServer | None = None

    def actions(self) -> list[ActionSpec]:
        """The wrapped driver's actions."""
        return self.inner.actions()

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Run the wrapped action, meeting the fault drawn for it (if any).

        Raises:
            InstrumentError: ``sim_fault`` (retryable) for an ``error`` fault, or whatever
                the wrapped driver raises.
        """
        fault = self.plan.draw()
        if fault is not None:
            self.plan.record(fault, action, parameters)
        if fault is Fault.ERROR:
            raise InstrumentError(self.name, SIM_FAULT, "injected fault", retryable=True)
        if fault is Fault.HANG:
            await asyncio.Event().wait()  # until the request is cancelled
        if fault is Fault.CRASH:
            await asyncio.sleep(self.duration_s / 2)
            logger.error("instrument %s: injected crash, exiting", self.name)
            os._exit(CRASH_EXIT_CODE)
        if fault is Fault.DROP and self.server is not None:
            self.server.drop_for(self.plan.spec.drop_s)
        if fault is Fault.MALFORMED and self.server is not None:
            self.server.corrupt_next_reply()
        result = await self.inner.run(action, parameters)
        if fault is Fault.SLOW:
            await asyncio.sleep(self.duration_s * (self.plan.spec.slow_factor - 1.0))
        if fault is Fault.BAD_RESULT:
            # breaks the declared schema: the first output is missing, an unknown one appears
            result = [*result[1:], Measurement(name="undeclared_output", value=1.0)]
        return result

    async def close(self) -> None:
        """Close the wrapped driver and the fault log."""
        self.plan.close()
        await self.inner.close()


class FaultyServer(InstrumentServer):
    """An instrument server whose link can misbehave: garbled replies, network drops."""

    def __init__(self, driver: Driver, address: str, **kwargs: Any) -> None:
        super().__init__(driver, address, **kwargs)
        self._corrupt = 0
        self._dropping: asyncio.Task[None] | None = None
        if isinstance(driver, FaultyDriver):
            driver.server = self

    def corrupt_next_reply(self) -> None:
        """Answer the next reply frame with bytes that are not a protocol message."""
        self._corrupt += 1

    def drop_for(self, seconds: float) -> None:
        """Close the socket now and bind the same endpoint again after ``seconds``."""
        if self._dropping is None or self._dropping.done():
            self._dropping = asyncio.get_running_loop().create_task(self._drop(seconds))

    def _reply_frame(self, msg: Any, body: dict[str, Any]) -> bytes:
        frame = super()._reply_frame(msg, body)
        if self._corrupt:
            self._corrupt -= 1
            frame = b"\x00\xffnot a protocol message" + frame[:16]
        return frame

    async def _drop(self, seconds: float) -> None:
        endpoint = self.endpoint
        receiver = self._tasks[0]
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None  # replies (held long polls included) are lost meanwhile
        logger.warning("instrument %s: off the network for %.1f s", self.name, seconds)
        await asyncio.sleep(seconds)
        sock = self._make_socket()  # the same options as the first socket, CURVE included
        for _ in range(100):  # the port may linger in the kernel for a moment
            try:
                sock.bind(endpoint)
                break
            except zmq.ZMQError:
                await asyncio.sleep(0.05)
        else:
            sock.close(linger=0)
            logger.error("instrument %s: could not bind %s again; exiting", self.name, endpoint)
            os._exit(CRASH_EXIT_CODE)
        self._socket = sock
        self._tasks[0] = asyncio.create_task(self._receive_loop(), name=f"sdlab-recv-{self.name}")
        logger.warning("instrument %s: back on the network at %s", self.name, endpoint)

    async def stop(self) -> None:
        """Stop serving (a drop in progress is cancelled)."""
        if self._dropping is not None:
            self._dropping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dropping
        if self._socket is None and self._endpoint is not None:  # stopped while off the network
            ctx = self._context if self._context is not None else zmq.asyncio.Context.instance()
            self._socket = ctx.socket(zmq.ROUTER)  # so the base class cleans up as usual
        await super().stop()


def faulty(driver: Driver, spec: FaultSpec, duration_s: float, log_dir: Path | None) -> Driver:
    """Wrap ``driver`` so it injects the faults ``spec`` asks for."""
    log_path = log_dir / f"{driver.name}.faults.jsonl" if log_dir is not None else None
    return FaultyDriver(driver, FaultPlan(spec, driver.name, log_path), duration_s)
