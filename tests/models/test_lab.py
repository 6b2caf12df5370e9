"""The lab file (models/lab.py): validation with key paths, and campaigns that name it."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.campaign_file import load_campaign
from models.errors import InvalidCampaignError
from models.gateway import load_gateway
from models.lab import LabSpec, load_lab
from sim.campaign_toml import problem_toml

LAB = """
[lab]
name = "lab-1"

[defaults]
timeout_s = 30.0
client_keys = "keys/controller.key_secret"

[[gateways]]
name = "pc-1"
host = "10.0.0.5"

[[instruments]]
name = "station-1"
kind = "station"
address = "tcp://127.0.0.1:5801"
gateway = "pc-1"
[instruments.simulated]
world = "branin"

[[instruments]]
name = "station-2"
kind = "station"
address = "tcp://127.0.0.1:5802"

[[instruments]]
name = "xrd-1"
kind = "xrd"
address = "tcp://10.0.0.5:5803"
gateway = "pc-1"
curve = { server_public_key = "keys/xrd-1.key" }

[[resources]]
name = "arm"
capacity = 1
"""

CAMPAIGN = (
    """
[campaign]
name = "c1"

[lab]
name = "lab-1"
{lab}

"""
    + problem_toml("branin")
    + """[[workflow]]
kind = "station"
action = "measure"
needs = ["arm"]

[planner]
name = "random"

[budget]
max_experiments = 3
"""
)


@pytest.fixture
def lab(tmp_path: Path) -> LabSpec:
    path = tmp_path / "lab.toml"
    path.write_text(LAB)
    return load_lab(path)


def test_a_lab_file_loads_with_key_paths_relative_to_it(tmp_path: Path, lab: LabSpec) -> None:
    xrd = lab.instrument("xrd-1")
    assert xrd is not None
    assert xrd.curve is not None
    assert xrd.curve.server_public_key == tmp_path / "keys" / "xrd-1.key"
    assert xrd.curve.client_keys == tmp_path / "keys" / "controller.key_secret"
    assert lab.units() == {
        "station-1": "kind:station",
        "station-2": "kind:station",
        "xrd-1": "kind:xrd",
        "arm-1": "arm",
    }


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        (
            'gateway = "pc-1"\n[instruments.simulated]',
            'gateway = "pc-9"\n[instruments.simulated]',
            "instruments[0].gateway",
            "unknown gateway 'pc-9'",
        ),
        ('address = "tcp://127.0.0.1:5802"\n', "", "instruments[1]", "address is required"),
        ('name = "station-2"', 'name = "station-1"', "instruments[1].name", "used twice"),
        ("capacity = 1", "capacity = 0", "resources[0].capacity", "greater than or equal"),
        ("capacity = 1", 'units = ["station-2"]', "resources[0]", "also an instrument name"),
        ('host = "10.0.0.5"', 'host = "10.0.0.5"\nport = 1', "gateways[0].port", "unknown key"),
    ],
)
def test_a_broken_lab_file_names_file_and_key_path(
    tmp_path: Path, old: str, new: str, key: str, message: str
) -> None:
    path = tmp_path / "lab.toml"
    assert old in LAB
    path.write_text(LAB.replace(old, new, 1))
    with pytest.raises(InvalidCampaignError) as err:
        load_lab(path)
    assert err.value.source == str(path)
    assert key in err.value.key_paths(), err.value.by_key()
    assert message in err.value.by_key()[key]


def test_a_campaign_names_lab_instruments_by_name_and_by_kind(tmp_path: Path, lab: LabSpec) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CAMPAIGN.format(lab='kinds = ["station"]\nresources = ["arm"]'))
    spec = load_campaign(path, lab)
    assert [(i.name, i.address, i.timeout_s) for i in spec.instruments] == [
        ("station-1", "tcp://127.0.0.1:5801", 30.0),
        ("station-2", "tcp://127.0.0.1:5802", 30.0),
    ]
    assert all(i.simulated is None and not i.hosted for i in spec.instruments)
    assert [r.name for r in spec.resources] == ["arm"]
    assert spec.lab is not None
    assert spec.lab.kinds == ["station"]
    path.write_text(CAMPAIGN.format(lab='instruments = ["station-2"]\nresources = ["arm"]'))
    assert [i.name for i in load_campaign(path, lab).instruments] == ["station-2"]


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ('instruments = ["station-9"]\nresources = ["arm"]', "lab.instruments[0]", "station-9"),
        ('kinds = ["oven"]\nresources = ["arm"]', "lab.kinds[0]", "no instrument of kind"),
        ('kinds = ["station"]\nresources = ["gripper"]', "lab.resources[0]", "no resource"),
        ('kinds = ["station"]\nrobots = 1', "lab.robots", "unknown key"),
    ],
)
def test_a_campaign_naming_what_the_lab_lacks_names_the_key_path(
    tmp_path: Path, lab: LabSpec, table: str, key: str, message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CAMPAIGN.format(lab=table))
    with pytest.raises(InvalidCampaignError) as err:
        load_campaign(path, lab)
    assert err.value.source == str(path)
    assert message in err.value.by_key()[key]


def test_a_campaign_of_a_lab_not_recorded_says_to_apply_it(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CAMPAIGN.format(lab='kinds = ["station"]'))
    with pytest.raises(InvalidCampaignError) as err:
        load_campaign(path)
    assert "sdlab lab apply" in err.value.by_key()["lab.name"]


def test_a_gateway_serves_the_hosted_instruments_of_a_lab_file(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text(LAB)
    gw = load_gateway(path)
    assert [e.spec.name for e in gw.entries] == ["station-1"]
    assert gw.entries[0].spec.address == "tcp://127.0.0.1:5801"
