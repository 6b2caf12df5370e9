"""Lab PCs for integration tests: Linux network namespaces joined to this host by veth pairs.

Each :class:`LabPC` is a namespace with an address of its own (``10.77.N.2``; the host's
end of the link is ``10.77.N.1``), where a test runs an instrument gateway as a lab PC
would (``sdlab instruments serve`` inside the namespace, bound to its address). Setting the
host's end of the link down cuts the PC off, as a pulled cable or a dead switch would.
Creating namespaces needs root; :func:`lab_pcs` skips the test where ``ip netns add`` fails.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from instruments.security import generate_keys

# ------------------------------------------------------------------ network namespaces


@dataclass
class LabPC:
    """A network namespace joined to this host by a veth pair.

    Attributes:
        netns: The namespace's name.
        host_if: The host's end of the veth pair (cut the link by setting it down).
        host_ip: The host's address on the link.
        ip: The namespace's address, where its gateway binds.
        procs: Processes started in the namespace (stopped before it is deleted).
    """

    netns: str
    host_if: str
    host_ip: str
    ip: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)


def ip(*args: str, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *args] if netns is None else ["ip", "netns", "exec", netns, "ip", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


def must(res: subprocess.CompletedProcess[str]) -> None:
    assert res.returncode == 0, f"{' '.join(res.args)}: {res.stderr.strip()}"


def free_subnets(n: int) -> list[int]:
    """``n`` third octets ``N`` whose ``10.77.N.0/24`` no interface of this host uses."""
    used = ip("-4", "-o", "addr").stdout
    free = [k for k in range(1, 255) if f" 10.77.{k}." not in used]
    assert len(free) >= n, "no free 10.77.N.0/24 subnets"
    return free[:n]


def add_pc(tag: str, i: int, octet: int) -> LabPC:
    pc = LabPC(
        netns=f"sdlab-{tag}-pc{i}",
        host_if=f"sdl{tag}h{i}",
        host_ip=f"10.77.{octet}.1",
        ip=f"10.77.{octet}.2",
    )
    peer = f"sdl{tag}n{i}"
    must(ip("link", "add", pc.host_if, "type", "veth", "peer", "name", peer))
    must(ip("link", "set", peer, "netns", pc.netns))
    must(ip("addr", "add", f"{pc.host_ip}/24", "dev", pc.host_if))
    must(ip("link", "set", pc.host_if, "up"))
    must(ip("addr", "add", f"{pc.ip}/24", "dev", peer, netns=pc.netns))
    must(ip("link", "set", peer, "up", netns=pc.netns))
    must(ip("link", "set", "lo", "up", netns=pc.netns))
    return pc


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def lab_pcs() -> Iterator[list[LabPC]]:
    """Two namespaces with their links, named uniquely; everything is removed afterwards."""
    if shutil.which("ip") is None:
        pytest.skip("network namespaces unavailable: no `ip` command")
    tag = uuid.uuid4().hex[:6]
    made: list[str] = []
    pcs: list[LabPC] = []
    try:
        for i in (1, 2):
            netns = f"sdlab-{tag}-pc{i}"
            res = ip("netns", "add", netns)
            if res.returncode != 0:
                pytest.skip(f"network namespaces unavailable: {res.stderr.strip()}")
            made.append(netns)
        for i, octet in enumerate(free_subnets(2), start=1):
            pcs.append(add_pc(tag, i, octet))
        yield pcs
    finally:
        for pc in pcs:
            for proc in pc.procs:
                stop(proc)
        for i, netns in enumerate(made, start=1):
            ip("netns", "del", netns)  # takes its end of the veth pair, and so the pair
            ip("link", "del", f"sdl{tag}h{i}")  # in case it outlived the namespace


# ------------------------------------------------------------------ files


@dataclass(frozen=True)
class Keys:
    """CURVE key files: one pair per gateway, one for the controller."""

    root: Path

    def public(self, name: str) -> Path:
        return self.root / f"{name}.key"

    def secret(self, name: str) -> Path:
        return self.root / f"{name}.key_secret"

    @property
    def allowed(self) -> Path:
        return self.root / "allowed"


def make_keys(root: Path) -> Keys:
    keys = Keys(root)
    for name in ("pc1", "pc2", "controller"):
        generate_keys(root, name)
    keys.allowed.mkdir()
    shutil.copy(keys.public("controller"), keys.allowed / "controller.key")
    return keys


def start_gateway(pc: LabPC, lab: Path, journal_dir: Path) -> subprocess.Popen[str]:
    """Start ``sdlab instruments serve LAB.toml`` inside the PC's namespace."""
    cmd = ["ip", "netns", "exec", pc.netns, sys.executable, "-m", "controller.cli"]
    cmd += ["instruments", "serve", str(lab), "--journal-dir", str(journal_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pc.procs.append(proc)
    return proc


def ready(pc: LabPC, proc: subprocess.Popen[str]) -> None:
    """Wait for a gateway's ready line; it must serve on the PC's own address."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert '"ready": true' in line, proc.stderr.read() if proc.stderr else line
    assert f"tcp://{pc.ip}:" in line, line
