"""The runner's own logic (the full runs are in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.cli import cli
from controller.runner import absolute_db_url, validate
from models.errors import InvalidCampaignError


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


EXAMPLES = Path(__file__).parents[2] / "examples"


def _without_x6(tmp_path: Path) -> Path:
    text = (EXAMPLES / "hartmann6.toml").read_text()
    x6 = '[[parameters]]\nname = "x6"\ntype = "continuous"\nlower = 0.0\nupper = 1.0\n'
    assert x6 in text
    path = tmp_path / "stuck.toml"
    path.write_text(text.replace(x6, ""))
    return path


def test_a_workflow_its_simulated_instruments_cannot_run_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    # hartmann6's stations require x1..x6; without x6 every proposal would be refused.
    path = _without_x6(tmp_path)
    db = tmp_path / "sdlab.db"
    result = CliRunner().invoke(cli, ["run", str(path), "--db", f"sqlite:///{db}", "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "workflow[0]: instrument 'station-1': action 'measure' requires parameter 'x6'" in (
        result.output
    )
    assert not db.exists()
    with pytest.raises(InvalidCampaignError) as info:
        validate(path)
    assert {p.path for p in info.value.problems} == {("workflow", 0)}


def test_a_bad_simulated_driver_option_is_reported_under_its_instrument(tmp_path: Path) -> None:
    text = (EXAMPLES / "hartmann6.toml").read_text()
    path = tmp_path / "bad.toml"
    path.write_text(text.replace('driver = "objective-station"', 'driver = "no-such-driver"', 1))
    with pytest.raises(InvalidCampaignError) as info:
        validate(path)
    assert info.value.problems[0].path == ("instruments", 0, "simulated", "driver")


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
    assert info.value.problems[0].key == "instruments[0].options.poll_s"
    path.write_text(HOSTED.replace('"serial-hotplate"', '"no-such-driver"'))
    with pytest.raises(InvalidCampaignError) as info:
        validate(path)
    assert info.value.problems[0].key == "instruments[0].driver"
