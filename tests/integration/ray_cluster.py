"""A Ray cluster of several nodes on this machine, started with ``ray start`` as an operator
would, whose nodes the tests can kill one by one.

Each node is one ``ray start --block`` process in a process group of its own. Worker nodes
listen on loopback addresses of their own (``127.0.0.2``, ...), so that a driver on this
machine always joins the head node's raylet, and a node is told apart by its address.
Killing a node kills its process group and every process below it (Ray's workers put
themselves into groups of their own), as a power cut would; ``ray stop`` is not used: it
stops every Ray instance of the machine, other tests' included.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))

# Node death is noticed after a few missed health checks: half a second each, not Ray's
# default of several seconds, so that the planner's restart starts soon after a kill.
FAST_HEALTH_CHECKS = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
    "RAY_USAGE_STATS_ENABLED": "0",
}


# Nothing a test reads: no usage reports, no log monitor process per node.
QUIET = ["--disable-usage-stats", "--include-log-monitor=false"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    """One ``ray start --block`` process.

    Attributes:
        name: For messages.
        ip: The node's address.
        proc: The ``ray start`` process (the leader of its process group).
        log: Where its output goes.
    """

    name: str
    ip: str | None
    proc: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL the node's process group and every process below it."""
        try:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(tree, timeout=30)
        self.proc.wait(30)


@dataclass
class LocalRayCluster:
    """A head node and worker nodes on this machine.

    Attributes:
        temp_dir: The cluster's Ray temp dir (set on the head; worker nodes on the same
            machine share it). Kept short: Ray's socket paths live under it.
        nodes: Every node started, killed ones included.
        address: The head's GCS address, for ``--address`` and ``--ray-address``.
    """

    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ray", dir="/tmp")))
    nodes: list[Node] = field(default_factory=list)
    address: str = ""

    token: str = field(default_factory=lambda: secrets.token_hex(32))

    def env(self) -> dict[str, str]:
        """The environment of every ``ray start`` (and of a driver that joins).

        The cluster has a token of its own: a token file that another Ray instance of the
        machine wrote (``~/.ray/auth_token``) must not decide who may join it.
        """
        return {
            **os.environ,
            **FAST_HEALTH_CHECKS,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
        }

    def _start(self, name: str, args: list[str], ip: str | None) -> Node:
        log = self.temp_dir / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [RAY, "start", "--block", *QUIET, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env(),
                start_new_session=True,
            )
        node = Node(name, ip, proc, log)
        self.nodes.append(node)
        return node

    def start_head(self, *, num_cpus: int = 1, timeout_s: float = 60.0) -> str:
        """Start the head node (no custom resources); returns its address."""
        node = self._start(
            "head",
            [
                "--head",
                "--port=0",
                f"--num-cpus={num_cpus}",
                "--include-dashboard=false",
                f"--dashboard-port={_free_port()}",
                f"--ray-client-server-port={_free_port()}",
                "--dashboard-agent-listen-port=0",
                f"--temp-dir={self.temp_dir}",
            ],
            None,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert node.proc.poll() is None, node.log.read_text()
            for line in node.log.read_text(errors="replace").splitlines():
                if "ray start --address=" in line:
                    self.address = line.split("--address=", 1)[1].strip().strip("'\"")
                    return self.address
            time.sleep(0.1)
        raise AssertionError(f"the head node did not start:\n{node.log.read_text()}")

    def add_worker(
        self,
        name: str,
        ip: str,
        *,
        resources: dict[str, float],
        num_cpus: int = 1,
        num_gpus: int = 0,
    ) -> Node:
        """Start a worker node at loopback address ``ip`` offering ``resources``.

        ``num_gpus`` declares GPUs to Ray's accounting whether or not the machine has them
        (a planner given a GPU that is not there falls back to the CPU).
        """
        assert self.address, "start the head first"
        return self._start(
            name,
            [
                f"--address={self.address}",
                f"--node-ip-address={ip}",
                f"--num-cpus={num_cpus}",
                f"--num-gpus={num_gpus}",
                f"--resources={json.dumps(resources)}",
                "--dashboard-agent-listen-port=0",
            ],
            ip,
        )

    def shutdown(self) -> None:
        """Kill every node still running (workers first) and remove the temp dir."""
        for node in reversed(self.nodes):
            if node.proc.poll() is None or psutil.pid_exists(node.proc.pid):
                node.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
