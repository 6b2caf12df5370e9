"""Candidate pools and enumerated discrete spaces (planners/candidates.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.constraints import MixtureConstraint
from models.errors import InvalidCampaignError
from models.params import CategoricalParameter, ContinuousParameter, IntegerParameter, SearchSpace
from planners.candidates import CandidateSet, enumerate_space, read_pool
from planners.encoding import SpaceEncoder

SPACE = SearchSpace(
    parameters=[
        ContinuousParameter(name="x", lower=0.0, upper=1.0),
        IntegerParameter(name="n", lower=1, upper=3),
        CategoricalParameter(name="gas", choices=["air", "argon"]),
    ]
)


def test_pool_rows_are_read_as_points_without_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "pool.csv"
    path.write_text("gas,x,n,comment\nair,0.25,2,a\nargon,0.5,3.0,b\nair,0.25,2,again\n")
    rows = read_pool(path, SPACE)
    assert rows == [{"x": 0.25, "n": 2, "gas": "air"}, {"x": 0.5, "n": 3, "gas": "argon"}]
    pool = CandidateSet(SpaceEncoder(SPACE), rows, "pool")
    assert pool.available([{"x": 0.25, "n": 2, "gas": "air"}]) == [1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x,n\n0.1,1\n", "no column for parameters ['gas']"),
        ("x,n,gas\n0.1,9,air\n", "row 2"),
        ("x,n,gas\n0.1,1,helium\n", "row 2"),
        ("x,n,gas\n", "no rows"),
    ],
)
def test_bad_pool_files_name_the_option(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "pool.csv"
    path.write_text(text)
    with pytest.raises(InvalidCampaignError) as info:
        read_pool(path, SPACE)
    key, problem = info.value.problems[0].key, info.value.problems[0].message
    assert key == "planner.options.pool"
    assert message in problem


MIXTURE = SearchSpace(
    parameters=[ContinuousParameter(name=n, lower=0.0, upper=1.0) for n in ("a", "b", "c")],
    constraints=[MixtureConstraint(parameters=["a", "b", "c"])],
)


def test_pool_rows_that_break_a_mixture_constraint_are_refused_naming_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pool.csv"
    path.write_text("a,b,c\n0.2,0.3,0.5\n0.2,0.2,0.2\n1,1,1\n0.5,0.5,0\n")
    with pytest.raises(InvalidCampaignError) as info:
        read_pool(path, MIXTURE)
    key, problem = info.value.problems[0].key, info.value.problems[0].message
    assert key == "planner.options.pool"
    assert problem.startswith("2 of 4 rows break a constraint")
    assert "row 3:" in problem
    assert "sum is 0.6" in problem
    assert "row 4:" in problem
    assert "sum is 3" in problem
    path.write_text("a,b,c\n0.2,0.3,0.5\n0.5,0.5,0\n")
    assert len(read_pool(path, MIXTURE)) == 2


def test_a_units_row_under_the_header_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "pool.csv"
    path.write_text("x,n,gas\nfraction,count,-\n0.1,1,air\n0.2,2,argon\n")
    with pytest.raises(InvalidCampaignError) as info:
        read_pool(path, SPACE)
    problem = info.value.problems[0].message
    assert "row 2 looks like a row of units" in problem
    assert "x: 'fraction'" in problem
    assert "n: 'count'" in problem
    path.write_text("x,n,gas\nnot-a-number,1,air\nalso-not,2,argon\n")
    with pytest.raises(InvalidCampaignError) as info:
        read_pool(path, SPACE)
    assert "row 2: " in info.value.problems[0].message  # bad data, not units: the usual message


def test_discrete_spaces_are_enumerated_up_to_the_limit() -> None:
    space = SPACE.subset(["n", "gas"])
    points = enumerate_space(space, limit=6)
    assert points is not None
    assert len(points) == 6
    assert {"n": 3, "gas": "argon"} in points
    assert enumerate_space(space, limit=5) is None
    assert enumerate_space(SPACE, limit=10**6) is None  # x is continuous
