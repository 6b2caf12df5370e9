"""The dashboard under load answers no 5xx: parallel clients while two writers write.

A real ``sdlab serve`` (uvicorn subprocess) on loopback, two processes writing to the same
store as controllers do, and 8 client threads sending mixed requests (logins, token reads,
operator commands, short live streams), on SQLite and on PostgreSQL. The full size (8 x 500)
with latencies per route, before and after the fix, is ``benchmarks/dashboard_load.py``;
here each client sends fewer requests so that the suite stays quick.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.dashboard_load import run_load

pytestmark = pytest.mark.slow

CLIENTS = 8
REQUESTS = 40
"""Per client; bounded so that one run takes well under a minute on a loaded machine."""


def test_no_server_errors_under_parallel_load_with_two_writers(db_url: str, tmp_path: Path) -> None:
    tally = run_load(db_url, tmp_path / "load", clients=CLIENTS, requests=REQUESTS)
    answered = sum(len(codes) for codes in tally.statuses.values())
    assert tally.errors == []
    assert answered == CLIENTS * REQUESTS
    bad = {route: [c for c in codes if c >= 500] for route, codes in tally.statuses.items()}
    assert {route: codes for route, codes in bad.items() if codes} == {}
    # every kind of request was made and most were answered as asked
    assert {"POST /login", "GET campaign", "GET stream"} <= set(tally.statuses)
    logins = tally.statuses["POST /login"]
    assert all(code == 303 for code in logins)
