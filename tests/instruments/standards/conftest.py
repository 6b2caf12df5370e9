"""Fixtures of the standards' driver tests: free ports, the reference servers' modules."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "standards"
"""The reference servers live with the example that serves them (one copy, tested here)."""

if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


def free_port() -> int:
    """A TCP port free on loopback just now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
