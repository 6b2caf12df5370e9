"""Tables for the Python API (:mod:`controller.notebook`): CSV files read with their
problems named, table rows as dicts, and the cells of a row as numbers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.csvfile import read_csv_table
from models.errors import InvalidCampaignError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["cell_value", "is_missing", "numeric_values", "read_csv", "table_records"]


def read_csv(path: str | Path, numeric: Sequence[str]) -> pd.DataFrame:
    """A CSV file as a DataFrame; a units row under the header is refused by name.

    The file is read by :func:`models.csvfile.read_csv_table` (comma, semicolon or tab
    separated, decimal commas, a byte-order mark, blank rows), and a column whose filled
    cells are all numbers becomes numeric. ``frame.attrs["lines"]`` holds each row's line
    in the file, for messages.

    Args:
        path: The file (a header row, then one row per measurement).
        numeric: Columns that hold numbers (numeric parameters and objectives).

    Raises:
        InvalidCampaignError: If the file cannot be read, or its first row holds text
            (``degC``) in number columns whose other rows hold numbers.
    """
    import pandas as pd

    table = read_csv_table(path, "file")
    units = table.units_cells(numeric)
    if units:
        raise InvalidCampaignError(
            str(path),
            [
                (
                    "rows[0]",
                    f"line {table.lines[0]} looks like a row of units ({', '.join(units)}), "
                    "not a measurement: delete it and put units in the column names "
                    "(e.g. temperature_c)",
                )
            ],
        )
    frame = pd.DataFrame(
        [[row.get(h, "") for h in table.header if h] for row in table.rows],
        columns=[h for h in table.header if h],
        dtype=object,
    )
    frame = frame.where(frame != "", None)
    for name in frame.columns:
        filled = frame[name].dropna()
        as_numbers = pd.to_numeric(filled, errors="coerce")
        if len(filled) and as_numbers.notna().all():
            frame[name] = pd.to_numeric(frame[name])
    frame.attrs["lines"] = list(table.lines)
    return frame


def table_records(table: Any) -> list[dict[str, Any]]:
    if hasattr(table, "to_dict"):
        return [dict(r) for r in table.to_dict(orient="records")]
    if isinstance(table, Mapping):
        return [dict(table)]
    return [dict(r) for r in table]


def is_missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def cell_value(v: object) -> object:
    """A table cell as a parameter value (numpy scalars become Python numbers)."""
    if hasattr(v, "item"):
        v = v.item()
    return v


def numeric_values(
    rec: Mapping[str, Any], exclude: set[str], required: Iterable[str]
) -> tuple[dict[str, float], list[tuple[str, str]]]:
    """The numeric values of ``rec`` (missing ones skipped), and the ``required`` columns
    (the objectives) that hold something else; other text columns (notes) are ignored."""
    must = set(required)
    values: dict[str, float] = {}
    bad: list[tuple[str, str]] = []
    for key, v in rec.items():
        if key in exclude or is_missing(cell_value(v)):
            continue
        v = cell_value(v)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            try:
                v = float(str(v))
            except ValueError:
                if key in must:
                    bad.append((str(key), f"{v!r} is not a number"))
                continue
        if not math.isfinite(float(v)):
            if key in must:
                bad.append((str(key), f"{v!r} is not a finite number"))
            continue
        values[str(key)] = float(v)
    return values, bad
