"""Start and stop the instrument servers a campaign hosts itself (its local gateway).

Each hosted instrument runs in its own gateway process, exactly as a real instrument server
would run on a lab PC, so a simulated campaign takes the same ZeroMQ path as a real one: an
instrument with an ``[instruments.simulated]`` table in ``python -m sim.serve FILE --only
NAME`` (the gateway with sdlab's simulators loaded), one that names a ``driver`` in
``python -m instruments.gateway FILE --only NAME`` (``--simulate`` runs it on the driver's
simulated backend). The processes die with the controller (Linux parent-death
signal) so a killed controller never leaves servers behind.

The servers are supervised, as a service manager supervises a real instrument server: one
that exits on its own (an injected ``crash`` fault, a bug) is started again on the endpoint
it had, where its journal tells clients that the action it was running was interrupted.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from models.campaign import CampaignSpec
from models.errors import InstrumentError

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the servers outlive a killed controller
        pass


class SimulatorProcesses:
    """The hosted instrument servers of one campaign, one process each.

    Args:
        spec: The campaign; its instruments with a ``driver`` or a simulator table are
            hosted.
        campaign_file: The campaign's TOML file (the servers read their settings from it).
        journal_dir: Where each server keeps its journal of finished requests, so a server
            restarted with the campaign still knows what it already did.
        startup_timeout_s: How long to wait for every server to say it is ready.
        restart_delay_s: Wait before a server that exited on its own is started again
            (``None``: do not restart it).
        simulate: Run every ``driver`` instrument on its driver's simulated backend.
    """

    def __init__(
        self,
        spec: CampaignSpec,
        campaign_file: Path,
        journal_dir: Path,
        startup_timeout_s: float = 120.0,
        restart_delay_s: float | None = 1.0,
        simulate: bool = False,
    ) -> None:
        self.names = [i.name for i in spec.instruments if i.hosted]
        self._modules = {
            i.name: "sim.serve" if i.simulator is not None else "instruments.gateway"
            for i in spec.instruments
            if i.hosted
        }
        self.simulate = simulate
        self.campaign_file = campaign_file
        self.journal_dir = journal_dir
        self.startup_timeout_s = startup_timeout_s
        self.restart_delay_s = restart_delay_s
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.endpoints: dict[str, str] = {}
        self.restarts: dict[str, int] = dict.fromkeys(self.names, 0)
        """How many times each server was started again after exiting on its own."""
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def start(self) -> dict[str, str]:
        """Start every server and wait until each reports its endpoint.

        Returns:
            Instrument name -> bound ZeroMQ endpoint.

        Raises:
            InstrumentError: If a server exits or stays silent past the start-up timeout.
        """
        self.spawn()
        return self.wait_ready()

    def spawn(self) -> None:
        """Start the server processes without waiting for them (see :meth:`wait_ready`)."""
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        for name in self.names:
            self.procs[name] = self._popen(name, None)

    def _popen(self, name: str, bind: str | None) -> subprocess.Popen[str]:
        cmd: list[str] = [
            sys.executable,
            "-m",
            self._modules[name],
            str(self.campaign_file),
            "--only",
            name,
            "--journal-dir",
            str(self.journal_dir),
        ]
        if bind is not None:
            cmd += ["--bind", bind]
        if self.simulate and self._modules[name] == "instruments.gateway":
            cmd.append("--simulate")
        return subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            preexec_fn=_die_with_parent,
        )

    def wait_ready(self) -> dict[str, str]:
        """Wait until every spawned server reports its endpoint; see :meth:`start`.

        Then watches them, restarting one that exits on its own (see ``restart_delay_s``).
        """
        deadline = time.monotonic() + self.startup_timeout_s
        for name, proc in self.procs.items():
            self.endpoints.update(self._read_ready(name, proc, deadline))
        logger.info("simulated instruments ready: %s", self.endpoints)
        if self.restart_delay_s is not None and self._watcher is None:
            self._watcher = threading.Thread(
                target=self._watch, name="sdlab-sim-supervisor", daemon=True
            )
            self._watcher.start()
        return dict(self.endpoints)

    def _read_ready(
        self, name: str, proc: subprocess.Popen[str], deadline: float, *, stop_all: bool = True
    ) -> dict[str, str]:
        """Read a server's ready line; on failure stop every server (if ``stop_all``)."""
        assert proc.stdout is not None
        while True:
            left = deadline - time.monotonic()
            problem: str | None = None
            if left <= 0:
                problem = "instrument server did not start"
            else:
                ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
                if not ready:
                    continue
                line = proc.stdout.readline()
                if line:
                    try:
                        msg = json.loads(line)
                    except json.JSONDecodeError:
                        logger.info("sim %s: %s", name, line.rstrip())
                        continue
                    return dict(msg.get("endpoints", {}))
                problem = f"instrument server exited with code {proc.wait()}"
            if stop_all:
                self.stop()
            raise InstrumentError(name, "unreachable", problem)

    def _watch(self) -> None:
        """Restart servers that exit on their own, on the endpoint each had."""
        assert self.restart_delay_s is not None
        while not self._stopping.wait(0.2):
            for name in self.names:
                with self._lock:
                    proc = self.procs.get(name)
                    if proc is None or proc.poll() is None or self._stopping.is_set():
                        continue
                    code = proc.returncode
                    if proc.stdout:
                        proc.stdout.close()
                logger.warning(
                    "simulated server %s exited with code %s; restarting it in %.1f s",
                    name,
                    code,
                    self.restart_delay_s,
                )
                if self._stopping.wait(self.restart_delay_s):
                    return
                with self._lock:
                    if self._stopping.is_set():
                        return
                    new = self._popen(name, self.endpoints.get(name))
                    self.procs[name] = new
                    self.restarts[name] += 1
                try:
                    self._read_ready(
                        name, new, time.monotonic() + self.startup_timeout_s, stop_all=False
                    )
                except InstrumentError as exc:
                    logger.error("simulated server %s did not come back: %s", name, exc)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every server (SIGTERM, then SIGKILL after ``timeout_s``)."""
        self._stopping.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=timeout_s)
            self._watcher = None
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for name, proc in self.procs.items():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("simulated server %s ignored SIGTERM; killing it", name)
                proc.kill()
                proc.wait()
            if proc.stdout and not proc.stdout.closed:
                proc.stdout.close()
        self.procs.clear()

    def __enter__(self) -> SimulatorProcesses:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def default_journal_dir(db_url: str, campaign: str) -> Path:
    """Where simulated servers keep their journals: beside a SQLite file, else in ``.sdlab/``."""
    if db_url.startswith("sqlite:///") and db_url != "sqlite:///:memory:":
        db = Path(db_url.removeprefix("sqlite:///"))
        return db.parent / f".{db.name}.sim" / campaign
    return Path(os.getcwd()) / ".sdlab" / "sim" / campaign
