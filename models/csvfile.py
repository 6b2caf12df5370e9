"""CSV files as labs export them, read into rows of text with their line numbers.

One reader for every table sdlab takes from a file (candidate pools, earlier measurements,
candidate lists, prior data), so each accepts the same exports:

* UTF-8 with or without the byte-order mark Excel's "CSV UTF-8" writes; any other encoding is
  refused naming the line and how to save the file, and a workbook (``.xlsx``, ``.xls``)
  saying it is one;
* comma-, semicolon- or tab-separated (the separator is the one the header line uses most,
  outside quotes, or the one an Excel ``sep=;`` line above the header names); with a
  semicolon or a tab, numbers may have a decimal comma (``0,25``, as Excel writes them in
  German or French), which is read as ``0.25``;
* blanks around names and cells are dropped, rows with every cell empty (Excel's ``,,,``
  at the end) are skipped, and a row short of cells has the rest empty;
* a header that names a column twice, or a row with more filled cells than the header has
  names, is refused naming the line, since either would lose values silently.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from models.errors import InvalidCampaignError

__all__ = ["CsvTable", "read_csv_table"]

_SEPARATORS = (",", ";", "\t")
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+(?:[eE][+-]?\d+)?")


@dataclass
class CsvTable:
    """A CSV file's header and rows (cells as text), each row with its line in the file."""

    header: list[str]
    rows: list[dict[str, str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    """The file line of each row (the header is line 1)."""
    decimal_comma: bool = False

    def units_cells(self, columns: Iterable[str]) -> list[str]:
        """The cells of the first row that look like units (``temperature_c: 'degC'``):
        text in a column of ``columns`` whose other rows all hold numbers. Empty when the
        first row is data (or the only row)."""
        if len(self.rows) < 2:
            return []
        first, rest = self.rows[0], self.rows[1:]
        return [
            f"{name}: {first[name]!r}"
            for name in columns
            if first.get(name)
            and not _is_number(first[name])
            and all(_is_number(r.get(name, "")) for r in rest)
        ]


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _separator(header_line: str) -> str:
    counts = dict.fromkeys(_SEPARATORS, 0)
    quoted = False
    for ch in header_line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(_SEPARATORS, key=lambda s: counts[s])
    return best if counts[best] else ","


def _text(path: Path, key: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidCampaignError(str(path), [(key, f"cannot read: {exc}")]) from exc
    if data.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):  # .xlsx (a zip) or .xls
        raise InvalidCampaignError(
            str(path),
            [
                (
                    key,
                    "this is a spreadsheet workbook, not a CSV file: save it as CSV (in "
                    "Excel: 'CSV UTF-8'), or, in Python, pass pandas.read_excel(...)'s "
                    "DataFrame where a DataFrame is taken",
                )
            ],
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidCampaignError(
            str(path),
            [
                (
                    key,
                    f"line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}): save the "
                    "file as UTF-8 (in Excel: 'CSV UTF-8')",
                )
            ],
        ) from exc


def read_csv_table(path: str | Path, key: str) -> CsvTable:
    """Read ``path`` (see the module docs for the exports accepted).

    Args:
        path: The CSV file: a header line of column names, then one line per row.
        key: The campaign-file key errors name (``planner.options.pool``).

    Raises:
        InvalidCampaignError: If the file cannot be read or decoded, has no header, names a
            column twice, or has a row with more cells than names.
    """
    path = Path(path)
    text = _text(path, key)
    first = text.split("\n", 1)[0].strip()
    hint = re.fullmatch(r"sep=(.)", first)
    if hint:  # Excel's separator line: "sep=;" above the header
        sep = hint.group(1)
        text = "\n" + text.split("\n", 1)[1] if "\n" in text else ""
    else:
        sep = _separator(text.lstrip("\r\n").split("\n", 1)[0])
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=sep))
    except csv.Error as exc:
        raise InvalidCampaignError(str(path), [(key, f"cannot read: {exc}")]) from exc
    numbered = [(i + 1, r) for i, r in enumerate(records) if any(c.strip() for c in r)]
    if not numbered:
        raise InvalidCampaignError(str(path), [(key, "the file is empty")])
    header_line, raw_header = numbered[0]
    header = [c.strip() for c in raw_header]
    twice = sorted({h for h in header if h and header.count(h) > 1})
    if twice:
        raise InvalidCampaignError(
            str(path), [(key, f"line {header_line}: the header names {twice} more than once")]
        )
    table = CsvTable(header=header)
    for line, cells in numbered[1:]:
        cells = [c.strip() for c in cells]
        extra = [c for c in cells[len(header) :] if c]
        if extra:
            raise InvalidCampaignError(
                str(path),
                [
                    (
                        key,
                        f"line {line} has {len(header) + len(extra)} filled cells, the header "
                        f"names {len(header)} columns (a separator inside a value needs quotes)",
                    )
                ],
            )
        cells += [""] * (len(header) - len(cells))
        table.rows.append({h: c for h, c in zip(header, cells, strict=False) if h})
        table.lines.append(line)
    if sep != ",":
        for row in table.rows:
            for name, cell in row.items():
                if _DECIMAL_COMMA.fullmatch(cell):
                    row[name] = cell.replace(",", ".")
                    table.decimal_comma = True
    return table
