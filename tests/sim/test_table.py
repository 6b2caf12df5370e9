"""The table world (sim/table.py) and the two-objective Branin-Currin world."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.campaign_file import load_campaign
from models.errors import InvalidCampaignError, ParameterLimitError
from models.records import Observation
from planners.base import make_planner
from sim.worlds import BraninCurrinWorld, get_world, world_names

CSV = "x,y,solvent,gain\n0.0,0.0,water,1.0\n0.5,0.0,water,2.0\n0.0,1.0,dmso,3.0\n1.0,1.0,dmso,4.5\n"


def table(tmp_path: Path, **options: object) -> object:
    path = tmp_path / "lab.csv"
    path.write_text(CSV)
    return get_world("table", path=str(path), **options)


def test_pool_mode_answers_rows_and_refuses_other_points(tmp_path: Path) -> None:
    assert "table" in world_names()
    world = table(tmp_path, parameters=["x", "y", "solvent"], outputs=["gain"])
    limits = {p.name: p for p in world.parameters()}  # type: ignore[attr-defined]
    assert (limits["x"].minimum, limits["x"].maximum) == (0.0, 1.0)
    assert limits["solvent"].choices == ["dmso", "water"]
    assert world.evaluate_true({"x": 0.5, "y": 0.0, "solvent": "water"}) == {"gain": 2.0}  # type: ignore[attr-defined]
    with pytest.raises(ParameterLimitError, match="no row"):
        world.evaluate_true({"x": 0.5, "y": 1.0, "solvent": "water"})  # type: ignore[attr-defined]
    assert world.best("gain", "maximize") == 4.5  # type: ignore[attr-defined]


def test_replicate_rows_are_one_condition_whose_spread_is_the_uncertainty(
    tmp_path: Path,
) -> None:
    path = tmp_path / "screen.csv"
    # (0, 0) measured three times (1, 2, 3), (1, 0) twice (5, 7), (0, 1) once
    path.write_text("x,y,gain\n0,0,1\n1,0,5\n0,0,2\n0,1,9\n0,0,3\n1,0,7\n")
    world = get_world("table", path=str(path), parameters=["x", "y"], outputs=["gain"])
    assert world.evaluate_true({"x": 0.0, "y": 0.0}) == {"gain": pytest.approx(2.0)}  # type: ignore[attr-defined]
    assert world.evaluate_true({"x": 1.0, "y": 0.0}) == {"gain": pytest.approx(6.0)}  # type: ignore[attr-defined]
    assert world.best("gain", "maximize") == 9.0  # type: ignore[attr-defined]
    assert list(world.replicates) == [3, 2, 1]  # type: ignore[attr-defined]
    # pooled: ((1-2)^2 + 0 + (3-2)^2 + (5-6)^2 + (7-6)^2) / ((3-1) + (2-1)) = 4/3
    assert world.uncertainty("gain", {"x": 0.0, "y": 1.0}) == pytest.approx((4 / 3) ** 0.5)  # type: ignore[attr-defined]
    plain = table(tmp_path, parameters=["x", "y", "solvent"], outputs=["gain"])
    assert plain.uncertainty("gain", {}) is None  # type: ignore[attr-defined]


def test_emulator_mode_interpolates_the_table(tmp_path: Path) -> None:
    world = table(tmp_path, parameters=["x", "y"], outputs=["gain"], mode="emulator")
    at_row = world.evaluate_true({"x": 1.0, "y": 1.0})["gain"]  # type: ignore[attr-defined]
    between = world.evaluate_true({"x": 0.5, "y": 0.5})["gain"]  # type: ignore[attr-defined]
    assert at_row == pytest.approx(4.5, abs=0.3)
    assert 1.0 < between < 4.5


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"parameters": ["x", "nope"], "outputs": ["gain"]}, "options.parameters"),
        ({"parameters": ["x"], "outputs": ["solvent"]}, "options.outputs"),
        (
            {"parameters": ["solvent"], "outputs": ["gain"], "mode": "emulator"},
            "options.parameters",
        ),
        ({"parameters": ["x"], "outputs": ["gain"], "mode": "replay"}, "options.mode"),
    ],
)
def test_bad_options_name_the_key(tmp_path: Path, options: dict[str, object], key: str) -> None:
    with pytest.raises(InvalidCampaignError) as info:
        table(tmp_path, **options)
    assert info.value.problems[0].key == key


def test_a_missing_file_is_a_campaign_error() -> None:
    with pytest.raises(InvalidCampaignError) as info:
        get_world("table", path="/nonexistent.csv", parameters=["x"], outputs=["y"])
    assert info.value.problems[0].key == "options.path"


def test_branin_currin_agrees_with_botorch() -> None:
    world = BraninCurrinWorld()
    assert [o.name for o in world.outputs()] == ["branin", "currin"]
    x = torch.rand(20, 2, dtype=torch.double, generator=torch.Generator().manual_seed(0))
    x[0] = torch.tensor([0.3, 0.0], dtype=torch.double)  # Currin's x2 = 0 edge
    expected = world.problem(x).numpy()
    for row, want in zip(x.tolist(), expected, strict=True):
        got = world.evaluate_true({"x1": row[0], "x2": row[1]})
        assert [got["branin"], got["currin"]] == pytest.approx(list(want), rel=1e-9)
    assert world.ref_point == [-18.0, -6.0]


def test_the_example_pool_campaign_runs_on_its_table(monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(__file__).parents[2]
    monkeypatch.chdir(root)  # the example's paths are relative to the repository root
    spec = load_campaign(root / "examples" / "ternary-pool.toml")
    sim = spec.instruments[0].simulated
    assert sim is not None
    world = get_world(sim.world, **sim.options)
    options = {**spec.planner.options, "num_restarts": 2, "raw_samples": 64}
    planner = make_planner(spec.planner.name, spec.space, spec.objectives, options=options)
    for _ in range(10):
        point = planner.ask(1).proposals[0].parameters
        spec.space.check_constraints(point)
        planner.tell([Observation(dict(point), world.evaluate_true(point))])  # type: ignore[arg-type]
    assert len({tuple(o.parameters.values()) for o in planner.observations}) == 10
    within = [o for o in planner.observations if o.objectives["cost"] <= 2.0]
    closest = min(abs(o.objectives["band_gap_ev"] - 1.4) for o in within)
    assert closest < 0.05
