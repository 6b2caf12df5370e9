"""``[[resources]]``, ``needs`` and ``sample_container`` in campaign files (models/resources.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.campaign_file import load_campaign
from models.errors import InvalidCampaignError

EXAMPLES = Path(__file__).parents[2] / "examples"

RESOURCES = """
sample_container = "crucible"

[[resources]]
name = "robot-arm"
capacity = 1

[[resources]]
name = "crucible"
units = ["A1", "A2", "A3"]
"""


def write(tmp_path: Path, extra: str = RESOURCES, needs: str = '["robot-arm"]') -> Path:
    text = (EXAMPLES / "hartmann6.toml").read_text()
    text = text.replace('action = "measure"', f'action = "measure"\nneeds = {needs}', 1)
    # top-level keys must come before the first table
    path = tmp_path / "c.toml"
    path.write_text(extra.split("\n[[", 1)[0] + "\n" + text + "\n[[" + extra.split("\n[[", 1)[1])
    return path


def test_resources_needs_and_the_sample_container_load(tmp_path: Path) -> None:
    spec = load_campaign(write(tmp_path))
    assert [r.name for r in spec.resources] == ["robot-arm", "crucible"]
    assert spec.resources[0].unit_names == ["robot-arm-1"]
    assert spec.resources[1].unit_names == ["A1", "A2", "A3"]
    assert spec.workflow[0].needs == ["robot-arm"]
    assert spec.sample_container == "crucible"


def test_a_campaign_without_resources_keeps_its_spec_hash(tmp_path: Path) -> None:
    spec = load_campaign(EXAMPLES / "hartmann6.toml")
    assert spec.resources == []
    assert spec.sample_container is None
    assert spec.workflow[0].needs == []
    data = spec.model_dump(mode="json")
    assert "needs" in data["workflow"][0]
    # the hash is computed without the new keys while they hold their defaults
    from models.campaign import _drop_later_defaults

    _drop_later_defaults(data)
    assert "resources" not in data
    assert "sample_container" not in data
    assert "needs" not in data["workflow"][0]
    assert load_campaign(write(tmp_path)).spec_hash() != spec.spec_hash()


@pytest.mark.parametrize(
    ("extra", "needs", "path", "message"),
    [
        (RESOURCES, '["robot-arms"]', "workflow[0].needs[0]", "unknown resource 'robot-arms'"),
        (RESOURCES, '["robot-arm", "robot-arm"]', "workflow[0].needs[1]", "listed twice"),
        (RESOURCES, '["crucible"]', "workflow[0].needs[0]", "is the sample container"),
        (RESOURCES.replace('"crucible"\n\n', '"pot"\n\n', 1), "[]", "sample_container",
         "unknown resource 'pot'"),
        (RESOURCES.replace('name = "crucible"', 'name = "robot-arm"'), "[]", "resources[1].name",
         "'robot-arm' is used twice"),
        (RESOURCES.replace('name = "crucible"', 'name = "station"'), "[]", "resources[1].name",
         "also an instrument kind"),
        (RESOURCES.replace("capacity = 1", "capacity = 0"), "[]", "resources[0].capacity",
         "greater than or equal to 1"),
        (RESOURCES.replace("capacity = 1", "capacity = 1\nunits = ['x']"), "[]", "resources[0]",
         "exactly one of capacity and units"),
        (RESOURCES.replace('"A3"', '"A1"'), "[]", "resources[1]", "'A1' is used twice"),
    ],
)  # fmt: skip
def test_bad_resources_name_their_key_path(
    tmp_path: Path, extra: str, needs: str, path: str, message: str
) -> None:
    with pytest.raises(InvalidCampaignError) as info:
        load_campaign(write(tmp_path, extra, needs))
    found = info.value.by_key()
    assert path in found, info.value.problems
    assert message in found[path]
