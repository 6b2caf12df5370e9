"""Pools tried as a new user tries them: the example pool campaign with a lab's own table,
validated as ``sdlab validate`` and ``sdlab run`` validate it (before anything is written)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.runner import validate
from models.errors import InvalidCampaignError
from planners.candidates import read_pool
from sim.table import TableWorld

REPO = Path(__file__).resolve().parents[2]
HEADER = "frac_a,frac_b,frac_c,anneal_c,band_gap_ev,cost\n"


def campaign_on(tmp_path: Path, table: str) -> Path:
    """The example pool campaign (examples/ternary-pool.toml) on the table ``table``."""
    data = tmp_path / "table.csv"
    data.write_text(table)
    text = (REPO / "examples" / "ternary-pool.toml").read_text()
    text = text.replace("examples/data/ternary-bandgap.csv", str(data))
    path = tmp_path / "pool.toml"
    path.write_text(text)
    return path


def test_rows_that_break_the_mixture_constraint_are_named_at_validation(tmp_path: Path) -> None:
    table = HEADER + "0.2,0.3,0.5,300,1.5,1.0\n0.2,0.2,0.2,400,1.4,1.0\n1,1,1,500,1.3,1.0\n"
    with pytest.raises(InvalidCampaignError) as info:
        validate(campaign_on(tmp_path, table))
    [problem] = info.value.problems
    assert problem.key == "planner.options.pool"
    assert problem.message.startswith("2 of 3 rows break a constraint")
    assert "row 3:" in problem.message
    assert "row 4:" in problem.message


def test_a_units_row_under_the_header_says_what_to_do(tmp_path: Path) -> None:
    table = HEADER + "fraction,fraction,fraction,degC,eV,EUR\n0.2,0.3,0.5,300,1.5,1.0\n"
    table += "0.5,0.5,0.0,300,1.2,1.0\n"
    with pytest.raises(InvalidCampaignError) as info:
        validate(campaign_on(tmp_path, table))
    message = str(info.value)
    assert "row 2 looks like a row of units" in message
    assert "anneal_c: 'degC'" in message
    assert "band_gap_ev: 'eV'" in message
    assert "put units in the column names" in message
    assert "must hold numbers in every row" not in message


def test_a_text_cell_in_an_output_column_names_its_row(tmp_path: Path) -> None:
    data = tmp_path / "t.csv"
    data.write_text("x,y\n0.1,1.0\n0.2,n/a\n0.3,2.0\n")
    with pytest.raises(InvalidCampaignError) as info:
        TableWorld(path=str(data), parameters=["x"], outputs=["y"], mode="pool")
    assert "row 3 holds 'n/a'" in str(info.value)


def test_replicate_rows_are_one_candidate_whose_spread_is_the_noise(tmp_path: Path) -> None:
    table = HEADER + "0.2,0.3,0.5,300,1.5,1.0\n0.2,0.3,0.5,300,1.7,1.0\n0.5,0.5,0.0,300,1.2,1.0\n"
    spec = validate(campaign_on(tmp_path, table))  # replicates are not an error
    world = TableWorld(
        path=str(tmp_path / "table.csv"),
        parameters=["frac_a", "frac_b", "frac_c", "anneal_c"],
        outputs=["band_gap_ev", "cost"],
        mode="pool",
    )
    point = {"frac_a": 0.2, "frac_b": 0.3, "frac_c": 0.5, "anneal_c": 300}
    assert world.evaluate_true(point)["band_gap_ev"] == pytest.approx(1.6)  # their mean
    # pooled standard deviation of the one replicated condition: |1.7 - 1.5| / sqrt(2)
    assert world.uncertainty("band_gap_ev", point) == pytest.approx(0.2 / 2**0.5)
    assert spec.planner.options["pool"] == str(tmp_path / "table.csv")


def test_the_example_pool_saved_by_a_german_excel_validates_and_serves_the_same_rows(
    tmp_path: Path,
) -> None:
    """The example's table as Excel writes it in a German locale (byte-order mark,
    semicolons, decimal commas, empty rows at the end): the same pool, the same world."""
    source = (REPO / "examples" / "data" / "ternary-bandgap.csv").read_text()
    german = "\ufeff" + source.replace(",", ";").replace(".", ",") + ";;;;;\n;;;;;\n"
    pools, worlds = [], []
    for name, table in (("comma", source), ("excel", german)):
        (tmp_path / name).mkdir()
        spec = validate(campaign_on(tmp_path / name, table))  # as sdlab validate does
        data = str(tmp_path / name / "table.csv")
        pools.append(read_pool(data, spec.space))
        columns = ["frac_a", "frac_b", "frac_c", "anneal_c"]
        worlds.append(TableWorld(path=data, parameters=columns, outputs=["band_gap_ev", "cost"]))
    assert len(pools[0]) > 10
    assert pools[0] == pools[1]
    assert (worlds[0].x == worlds[1].x).all()
    assert (worlds[0].y == worlds[1].y).all()
