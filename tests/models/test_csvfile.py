"""CSV files as labs export them (models/csvfile.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.csvfile import read_csv_table
from models.errors import InvalidCampaignError

ROWS = [{"x": "0.25", "n": "1", "gas": "air"}, {"x": "0.5", "n": "2", "gas": "argon"}]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("plain", b"x,n,gas\n0.25,1,air\n0.5,2,argon\n"),
        ("windows line ends", b"x,n,gas\r\n0.25,1,air\r\n0.5,2,argon\r\n"),
        ("Excel CSV UTF-8 (byte-order mark)", b"\xef\xbb\xbfx,n,gas\n0.25,1,air\n0.5,2,argon\n"),
        ("semicolons, decimal commas", b"x;n;gas\n0,25;1;air\n0,5;2;argon\n"),
        ("semicolons, decimal points", b"x;n;gas\n0.25;1;air\n0.5;2;argon\n"),
        ("tabs", b"x\tn\tgas\n0.25\t1\tair\n0.5\t2\targon\n"),
        ("blanks around names and cells", b"x , n, gas\n 0.25, 1 , air\n0.5,2, argon \n"),
        ("quoted cells", b'"x","n","gas"\n"0.25","1","air"\n"0.5","2","argon"\n'),
        ("Excel's separator line", b"sep=;\nx;n;gas\n0,25;1;air\n0,5;2;argon\n"),
    ],
)
def test_the_exports_labs_write_read_the_same(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    table = read_csv_table(path, "pool")
    assert table.header == ["x", "n", "gas"], name
    assert table.rows == ROWS, name
    first = 3 if data.startswith(b"sep=") else 2
    assert table.lines == [first, first + 1], name


def test_empty_rows_are_skipped_and_lines_still_name_the_file_line(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("x;n;gas\n0,25;1;air\n;;\n\n0,5;2\n;;;\n")
    table = read_csv_table(path, "pool")
    assert table.rows == [ROWS[0], {"x": "0.5", "n": "2", "gas": ""}]  # short: the rest empty
    assert table.lines == [2, 5]
    assert table.decimal_comma


def test_a_comma_file_keeps_its_commas_and_a_quoted_comma_stays_in_its_cell(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.csv"
    path.write_text('id,formula,note\n1,"Bi2O3","1,5 h at 700 C"\n')
    table = read_csv_table(path, "pool")
    assert table.rows == [{"id": "1", "formula": "Bi2O3", "note": "1,5 h at 700 C"}]
    assert not table.decimal_comma


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"x,n,gas\n0.1,1,air\n0.2,2,\xb0C\n", "line 3 is not UTF-8 text (byte 0xb0)"),
        (b"x,n,x\n0.1,1,2\n", "line 1: the header names ['x'] more than once"),
        (b"x,n\n0.1,1\n0.1,2,air\n", "line 3 has 3 filled cells, the header names 2"),
        (b"\n\n", "the file is empty"),
        (b"PK\x03\x04\x14\x00\x06\x00", "this is a spreadsheet workbook, not a CSV file"),
    ],
)
def test_a_file_that_would_lose_values_is_refused_by_line(
    tmp_path: Path, data: bytes, says: str
) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    with pytest.raises(InvalidCampaignError) as info:
        read_csv_table(path, "planner.options.pool")
    [problem] = info.value.problems
    assert problem.key == "planner.options.pool"
    assert says in problem.message
