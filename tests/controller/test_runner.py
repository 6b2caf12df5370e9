"""The runner's own logic (the full runs are in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.runner import absolute_db_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///sdlab.db", f"sqlite:///{Path('sdlab.db').resolve()}"),
        ("sqlite:///data/x.db?timeout=5", f"sqlite:///{Path('data/x.db').resolve()}?timeout=5"),
        ("sqlite:////abs/x.db", "sqlite:////abs/x.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
    ],
)
def test_relative_sqlite_paths_become_absolute(url: str, expected: str) -> None:
    assert absolute_db_url(url) == expected
