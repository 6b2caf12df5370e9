"""Campaign files uploaded to the dashboard, and the ``sdlab run`` processes it starts.

An uploaded file is kept as ``<data_dir>/campaigns/<name>.toml`` (the runner reads the
campaign from its file); starting the campaign runs ``sdlab run`` on it as a child process
of the server, in its own session so that it outlives a restart of the server, with its
output in ``<data_dir>/runs/<name>.log``. The controller in that process then takes its
orders from the commands table like any other.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from pathlib import Path

from controller.api.settings import ApiSettings
from models.errors import CampaignStateError

logger = logging.getLogger(__name__)


def campaign_file(settings: ApiSettings, name: str) -> Path:
    """Where the uploaded file of campaign ``name`` is kept."""
    return settings.campaigns_dir / f"{name}.toml"


def keep_campaign_file(settings: ApiSettings, name: str, text: str) -> Path:
    """Store an uploaded campaign file (already validated) under the data directory."""
    path = campaign_file(settings, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


class RunLauncher:
    """Starts ``sdlab run`` for campaigns and remembers the processes it started."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def running(self, name: str) -> bool:
        """Whether a run this server started for ``name`` is still alive."""
        with self._lock:
            proc = self._procs.get(name)
            return proc is not None and proc.poll() is None

    def start(self, name: str) -> int:
        """Start ``sdlab run`` for campaign ``name``.

        Returns:
            The process id.

        Raises:
            CampaignStateError: If there is no uploaded file for it, or a run this server
                started is still alive.
        """
        path = campaign_file(self.settings, name)
        if not path.is_file():
            raise CampaignStateError(
                f"campaign {name!r} was not uploaded to this dashboard; start it with "
                "'sdlab run FILE' where its file is"
            )
        with self._lock:
            proc = self._procs.get(name)
            if proc is not None and proc.poll() is None:
                raise CampaignStateError(f"campaign {name!r} is already running (pid {proc.pid})")
            cmd = [
                self.settings.python,
                "-m",
                "controller.cli",
                "run",
                str(path.resolve()),
                "--db",
                self.settings.db_url,
                "--no-progress",
            ]
            if self.settings.ray_address:
                cmd += ["--ray-address", self.settings.ray_address]
            self.settings.runs_dir.mkdir(parents=True, exist_ok=True)
            log = (self.settings.runs_dir / f"{name}.log").open("ab")
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            finally:
                log.close()
            self._procs[name] = proc
        logger.info("started sdlab run for campaign %s (pid %d)", name, proc.pid)
        return proc.pid

    def stop_all(self, timeout_s: float = 20.0) -> None:
        """Interrupt the runs this server started that are still alive, as Ctrl-C would.

        Each run's whole process group (its simulators included) gets SIGINT, and SIGKILL
        if it has not ended within ``timeout_s``. A run stopped this way resumes with
        ``sdlab run``.
        """
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            if proc.poll() is None:
                _signal_group(proc, signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
