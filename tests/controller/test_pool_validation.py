"""Pools tried as a new user tries them: the example pool campaign with a lab's own table,
validated as ``sdlab validate`` and ``sdlab run`` validate it (before anything is written)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.runner import validate
from models.errors import InvalidCampaignError
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
