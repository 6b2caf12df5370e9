"""Start and stop the simulated instrument servers a campaign names.

Each simulated instrument runs in its own process (``python -m sim.serve FILE --only NAME``),
exactly as a real instrument server would run on a lab PC, so a simulated campaign takes the
same ZeroMQ path as a real one. The processes die with the controller (Linux parent-death
signal) so a killed controller never leaves servers behind.
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
import time
from collections.abc import Sequence
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
    """The simulated instrument servers of one campaign, one process each.

    Args:
        spec: The campaign.
        campaign_file: The campaign's TOML file (the servers read their settings from it).
        journal_dir: Where each server keeps its journal of finished requests, so a server
            restarted with the campaign still knows what it already did.
        startup_timeout_s: How long to wait for every server to say it is ready.
    """

    def __init__(
        self,
        spec: CampaignSpec,
        campaign_file: Path,
        journal_dir: Path,
        startup_timeout_s: float = 120.0,
    ) -> None:
        self.names = [i.name for i in spec.instruments if i.simulated is not None]
        self.campaign_file = campaign_file
        self.journal_dir = journal_dir
        self.startup_timeout_s = startup_timeout_s
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.endpoints: dict[str, str] = {}

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
            cmd: Sequence[str] = [
                sys.executable,
                "-m",
                "sim.serve",
                str(self.campaign_file),
                "--only",
                name,
                "--journal-dir",
                str(self.journal_dir),
            ]
            self.procs[name] = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                preexec_fn=_die_with_parent,
            )

    def wait_ready(self) -> dict[str, str]:
        """Wait until every spawned server reports its endpoint; see :meth:`start`."""
        deadline = time.monotonic() + self.startup_timeout_s
        for name, proc in self.procs.items():
            assert proc.stdout is not None
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stop()
                    raise InstrumentError(name, "unreachable", "simulated server did not start")
                ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
                if ready:
                    line = proc.stdout.readline()
                    if not line:
                        code = proc.wait()
                        self.stop()
                        raise InstrumentError(
                            name, "unreachable", f"simulated server exited with code {code}"
                        )
                    try:
                        msg = json.loads(line)
                    except json.JSONDecodeError:
                        logger.info("sim %s: %s", name, line.rstrip())
                        continue
                    self.endpoints.update(msg.get("endpoints", {}))
                    break
        logger.info("simulated instruments ready: %s", self.endpoints)
        return dict(self.endpoints)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every server (SIGTERM, then SIGKILL after ``timeout_s``)."""
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
            if proc.stdout:
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
