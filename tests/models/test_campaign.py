"""Campaign specs (models/campaign.py, read by models/campaign_file.py): the examples load,
bad files name their key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.campaign_file import load_campaign, load_simulation
from models.errors import InvalidCampaignError

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize("name", ["hartmann6.toml", "branin-remote.toml"])
def test_the_example_campaigns_load(name: str) -> None:
    spec = load_campaign(EXAMPLES / name)
    assert spec.objectives[0].direction == "maximize"
    assert spec.space.names[0] == "x1"


def test_a_simulation_file_and_a_campaign_file_both_serve_their_simulated_instruments() -> None:
    assert [i.name for i in load_simulation(EXAMPLES / "branin.sim.toml").instruments] == [
        "branin-1"
    ]
    assert [i.name for i in load_simulation(EXAMPLES / "hartmann6.toml").instruments] == [
        "station-1",
        "station-2",
    ]
    with pytest.raises(InvalidCampaignError, match="no simulated instrument"):
        load_simulation(EXAMPLES / "branin-remote.toml")


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        ('direction = "maximize"', 'direction = "up"', "objectives[0].direction",
         "expected 'maximize' or 'minimize'"),
        ('type = "continuous"', 'type = "real"', "parameters[0].type", "unknown type 'real'"),
        ("lower = 0.0", "lower = 2.0", "parameters[0]", "must be greater than lower"),
        ('name = "hartmann6-demo"', 'name = "bad name!"', "campaign.name", "pattern"),
        ("max_experiments = 30", "max_experiments = -1", "budget.max_experiments",
         "greater than or equal to 1"),
        ('kind = "station"\naction', 'kind = "oven"\naction', "workflow[0].kind",
         "no instrument of kind 'oven'"),
        ("[planner]", "[planner]\nbogus = 1", "planner.bogus", "unknown key"),
        ('world = "hartmann6"\nnoise_std = 0.01\nduration_s = 1.0\nseed = 1', "",
         "instruments[0].simulated.world", "required key is missing"),
    ],
)  # fmt: skip
def test_a_broken_campaign_names_file_key_path_and_problem(
    tmp_path: Path, old: str, new: str, path: str, message: str
) -> None:
    text = (EXAMPLES / "hartmann6.toml").read_text()
    assert old in text
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(old, new, 1))
    with pytest.raises(InvalidCampaignError) as info:
        load_campaign(bad)
    assert info.value.source == str(bad)
    found = info.value.by_key()
    assert path in found, info.value.problems
    assert message in found[path]
    assert str(bad) in str(info.value)


def test_unreadable_and_non_toml_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidCampaignError, match="file not found"):
        load_campaign(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[campaign\nname = 1")
    with pytest.raises(InvalidCampaignError, match="invalid TOML"):
        load_campaign(bad)


def test_the_budget_does_not_change_the_spec_hash(tmp_path: Path) -> None:
    text = (EXAMPLES / "hartmann6.toml").read_text()
    a = load_campaign(EXAMPLES / "hartmann6.toml")
    (tmp_path / "b.toml").write_text(text.replace("max_experiments = 30", "max_experiments = 99"))
    (tmp_path / "c.toml").write_text(text.replace("noise_std = 0.01", "noise_std = 0.02", 1))
    assert load_campaign(tmp_path / "b.toml").spec_hash() == a.spec_hash()
    assert load_campaign(tmp_path / "c.toml").spec_hash() != a.spec_hash()


def _placed(tmp_path: Path, placement: str) -> Path:
    """hartmann6.toml with a ``[planner.placement]`` table."""
    text = (EXAMPLES / "hartmann6.toml").read_text()
    old = "options = { initial_points = 8 }\n"
    assert old in text
    path = tmp_path / "placed.toml"
    path.write_text(text.replace(old, old + "\n[planner.placement]\n" + placement + "\n", 1))
    return path


def test_the_planner_placement_is_read_and_left_out_of_the_spec_hash(tmp_path: Path) -> None:
    plain = load_campaign(EXAMPLES / "hartmann6.toml")
    assert plain.planner.placement.resources == {}
    assert plain.planner.placement.gpus(cluster_gpus=0) == 0
    assert plain.planner.placement.gpus(cluster_gpus=2) == 1
    spec = load_campaign(
        _placed(
            tmp_path,
            "num_cpus = 2\nnum_gpus = 0.5\nresources = { model_node = 1 }\nmax_restarts = -1",
        )
    )
    placement = spec.planner.placement
    assert (placement.num_cpus, placement.num_gpus, placement.max_restarts) == (2, 0.5, -1)
    assert placement.resources == {"model_node": 1.0}
    assert placement.gpus(cluster_gpus=0) == 0.5
    # Where the planner runs changes no decision: a resumed campaign may move it.
    assert spec.spec_hash() == plain.spec_hash()


@pytest.mark.parametrize(
    ("placement", "path", "message"),
    [
        ("resources = { model_node = 0 }", "planner.placement.resources.model_node",
         "greater than 0"),
        ('resources = { "bad name" = 1 }', 'planner.placement.resources."bad name"', "pattern"),
        ("resources = { GPU = 1 }", "planner.placement.resources", "ask for it with num_gpus"),
        ("num_gpus = -1", "planner.placement.num_gpus", "greater than or equal to 0"),
        ("num_cpus = 'two'", "planner.placement.num_cpus", "number"),
        ("max_restarts = -2", "planner.placement.max_restarts", "greater than or equal to -1"),
        ("restart_timeout_s = 0", "planner.placement.restart_timeout_s", "greater than 0"),
        ("gpus = 1", "planner.placement.gpus", "unknown key"),
    ],
)  # fmt: skip
def test_a_bad_planner_placement_names_its_key(
    tmp_path: Path, placement: str, path: str, message: str
) -> None:
    with pytest.raises(InvalidCampaignError) as info:
        load_campaign(_placed(tmp_path, placement))
    found = info.value.by_key()
    assert path in found, info.value.problems
    assert message in found[path]
