"""Candidate lists: a lab's own list of materials, read once and checked row by row.

A list is one of

* a **CSV file** (``.csv``) with a header row, an id column and a formula column (their
  names are options; the id column may be left out, and then the row number is the id).
  The export of an earlier campaign is such a file: name its material column as the
  formula column;
* a **structure file** (CIF ``.cif``, VASP ``POSCAR``/``CONTCAR``/``.vasp``/``.poscar``,
  or pymatgen JSON ``.json``: one ``Structure.as_dict()`` or a list of them), read by
  pymatgen; the id is the file's stem (``stem#k`` for the k-th structure of a JSON list);
* a **folder** of such structure files (read in sorted name order).

A row that cannot be used (an empty or unparsable formula, an unreadable structure, an id
given twice) is reported as a :class:`BadRow` (its row number or file and the reason) and
left out; the other rows go on. Only an unreadable source or a missing column is an error
(:class:`~models.errors.InvalidCampaignError` naming the option).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymatgen.core import Composition, Element, Structure

from models.csvfile import read_csv_table
from models.errors import InvalidCampaignError

logger = logging.getLogger(__name__)

__all__ = ["BadRow", "CandidateList", "CandidateRow", "read_candidates"]

STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar", ".json")
POSCAR_NAMES = ("POSCAR", "CONTCAR")


@dataclass(frozen=True)
class CandidateRow:
    """One usable candidate of a list.

    Attributes:
        id: Its identifier (unique within the list).
        formula: Its reduced formula (pymatgen's ``reduced_formula``).
        material: The composition, or the structure when the list gives structures.
        source: Where it came from (``"row 7"``, ``"file.cif"``).
    """

    id: str
    formula: str
    material: Composition | Structure
    source: str

    def content(self) -> str:
        """Text identifying the material's content (the feature cache's key material).

        A composition is its normalised formula (so ``Fe4O6`` and ``Fe2O3`` agree); a
        structure is its JSON, sorted, so any change of a site changes the key.
        """
        if isinstance(self.material, Structure):
            return "structure:" + json.dumps(self.material.as_dict(), sort_keys=True)
        return "composition:" + self.material.fractional_composition.formula


@dataclass(frozen=True)
class BadRow:
    """A row of a list that was left out.

    Attributes:
        where: Its row number (``"row 7"``, counting the header as row 1) or file.
        reason: Why it was left out.
    """

    where: str
    reason: str


@dataclass
class CandidateList:
    """The usable rows of a list and the rows left out.

    Attributes:
        rows: The usable candidates, in list order.
        bad: The rows left out, with reasons.
    """

    rows: list[CandidateRow] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)

    def add(self, cid: str, material: Composition | Structure, where: str) -> None:
        """Add a candidate unless its id is empty or taken (then it is a bad row)."""
        if not cid:
            self.bad.append(BadRow(where, "empty id"))
        elif cid in self._ids:
            self.bad.append(BadRow(where, f"id {cid!r} given twice (first at {self._ids[cid]})"))
        else:
            comp = material.composition if isinstance(material, Structure) else material
            self._ids[cid] = where
            self.rows.append(CandidateRow(cid, comp.reduced_formula, material, where))

    def __post_init__(self) -> None:
        self._ids: dict[str, str] = {r.id: r.source for r in self.rows}


def _problem(key: str, message: str, path: str | None = None) -> InvalidCampaignError:
    return InvalidCampaignError(path, [(key, message)])


def _composition(text: str) -> Composition:
    text = text.strip()
    if not text:
        raise ValueError("empty formula")
    try:
        comp = Composition(text)
    except Exception as exc:  # pymatgen raises several kinds for bad formulas
        raise ValueError(f"cannot parse formula {text!r}: {exc}") from exc
    if comp.num_atoms <= 0:
        raise ValueError(f"formula {text!r} has no atoms")
    unknown = [
        getattr(el, "symbol", str(el)) for el in comp.elements if not isinstance(el, Element)
    ]
    if unknown:
        raise ValueError(f"formula {text!r}: not elements: {', '.join(unknown)}")
    if any(amount < 0 for amount in comp.values()):
        raise ValueError(f"formula {text!r} has a negative amount")
    return comp


def _read_csv(path: Path, id_column: str | None, formula_column: str, key: str) -> CandidateList:
    table = read_csv_table(path, key)
    header = table.header
    for option, column in (("formula_column", formula_column), ("id_column", id_column)):
        if column is not None and column not in header:
            raise _problem(
                f"planner.options.{option}",
                f"no column {column!r} in {path} (columns: {', '.join(header)})",
                str(path),
            )
    out = CandidateList()
    for i, (line, row) in enumerate(zip(table.lines, table.rows, strict=True)):
        where = f"row {line}"
        cid = (row.get(id_column) or "").strip() if id_column else str(i + 1)
        try:
            comp = _composition(row.get(formula_column) or "")
        except ValueError as exc:
            out.bad.append(BadRow(where, str(exc)))
            continue
        out.add(cid, comp, where)
    return out


def _read_structures(path: Path) -> list[tuple[str, Structure]]:
    """Every structure of one file, with its id (raises ValueError when unreadable)."""
    try:
        if path.suffix.lower() == ".json":
            data: Any = json.loads(path.read_text(encoding="utf-8"))
            items = data if isinstance(data, list) else [data]
            many = isinstance(data, list)
            return [
                (f"{path.stem}#{k}" if many else path.stem, Structure.from_dict(d))
                for k, d in enumerate(items)
            ]
        return [(path.stem if path.suffix else path.name, Structure.from_file(path))]
    except Exception as exc:  # pymatgen's parsers raise many kinds
        raise ValueError(f"cannot read a structure: {type(exc).__name__}: {exc}") from exc


def _is_structure_file(path: Path) -> bool:
    return path.suffix.lower() in STRUCTURE_SUFFIXES or any(
        path.name.startswith(n) for n in POSCAR_NAMES
    )


def read_candidates(
    source: str | Path,
    *,
    id_column: str | None = "id",
    formula_column: str = "formula",
    key: str = "planner.options.candidates",
) -> CandidateList:
    """Read a candidate list (see the module docstring).

    Args:
        source: A CSV file, a structure file, or a folder of structure files.
        id_column: The CSV column of the ids (``None``: the row number).
        formula_column: The CSV column of the formulas.
        key: The option naming the source, for errors.

    Returns:
        The usable rows and the rows left out.

    Raises:
        InvalidCampaignError: If the source does not exist or cannot be read, or a named
            column is missing, or nothing usable is in it.
    """
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _is_structure_file(p))
        if not files:
            raise _problem(key, f"no structure files ({', '.join(STRUCTURE_SUFFIXES)}) in {path}")
        out = CandidateList()
        for f in files:
            try:
                found = _read_structures(f)
            except ValueError as exc:
                out.bad.append(BadRow(f.name, str(exc)))
                continue
            for cid, s in found:
                out.add(cid, s, f.name)
    elif path.is_file() and path.suffix.lower() == ".csv":
        out = _read_csv(path, id_column, formula_column, key)
    elif path.is_file() and _is_structure_file(path):
        out = CandidateList()
        try:
            for cid, s in _read_structures(path):
                out.add(cid, s, path.name)
        except ValueError as exc:
            raise _problem(key, f"{path}: {exc}", str(path)) from exc
    elif not path.exists():
        raise _problem(key, f"{path} does not exist")
    else:
        raise _problem(key, f"{path}: expected a .csv file, a structure file or a folder")
    if not out.rows:
        reasons = "; ".join(f"{b.where}: {b.reason}" for b in out.bad[:5])
        raise _problem(key, f"no usable candidate in {path}" + (f" ({reasons})" if reasons else ""))
    for b in out.bad[:20]:
        logger.warning("candidate list %s: %s left out: %s", path, b.where, b.reason)
    if len(out.bad) > 20:
        logger.warning("candidate list %s: %d more rows left out", path, len(out.bad) - 20)
    return out
