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


HOSTED = """
[campaign]
name = "hosted"

[[parameters]]
name = "setpoint_c"
type = "continuous"
lower = 30.0
upper = 90.0

[[objectives]]
name = "temperature_c"
direction = "maximize"

[[workflow]]
kind = "hotplate"
action = "heat"

[[instruments]]
name = "plate-1"
kind = "hotplate"
driver = "serial-hotplate"
options = { poll_s = 0.05 }

[planner]
name = "random"

[budget]
max_experiments = 2
"""


def test_validate_checks_the_options_of_hosted_drivers(tmp_path: Path) -> None:
    from controller.runner import validate
    from models.errors import InvalidCampaignError

    path = tmp_path / "c.toml"
    path.write_text(HOSTED)
    spec = validate(path, simulate=True)
    assert spec.instruments[0].hosted
    path.write_text(HOSTED.replace("poll_s = 0.05", "poll_s = -1"))
    with pytest.raises(InvalidCampaignError) as info:
        validate(path)
    assert info.value.problems[0][0] == "instruments[0].options.poll_s"
    path.write_text(HOSTED.replace('"serial-hotplate"', '"no-such-driver"'))
    with pytest.raises(InvalidCampaignError) as info:
        validate(path)
    assert info.value.problems[0][0] == "instruments[0].driver"
