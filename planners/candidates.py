"""Finite candidate sets: a pool of rows from a CSV file, or an enumerated discrete space.

When the points that can be made are a finite list (the compositions already in the
freezer, the wells of a plate, the rows of a lab's historical table) or the space has only
integer and categorical parameters, a planner scores every candidate with the acquisition
function instead of optimising over a relaxation (BoTorch ``optimize_acqf_discrete``).
Candidates already measured (failed ones included) or still pending are never proposed.

A pool file is a CSV with a header row; the columns named like the search space's
parameters are read (others are ignored), each row must be a valid point of the space:
within every parameter's bounds and satisfying the space's linear and mixture constraints
(a row that breaks one could never be run, since the safety gate refuses it). Units belong in
the column names (``temperature_c``); a units row under the header is refused with a message
saying so. A row repeated (replicate measurements of one condition) is one candidate.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from models.csvfile import read_csv_table
from models.errors import InvalidCampaignError, ParameterLimitError
from models.params import (
    CategoricalParameter,
    ContinuousParameter,
    IntegerParameter,
    ParamValue,
    SearchSpace,
    StringParameter,
)
from planners.encoding import SpaceEncoder

logger = logging.getLogger(__name__)

__all__ = ["CandidateSet", "enumerate_space", "point_key", "read_pool"]


def point_key(point: Mapping[str, ParamValue]) -> tuple[tuple[str, str], ...]:
    """A hashable identity of a point (values compared by their ``repr``)."""
    return tuple(sorted((k, repr(v)) for k, v in point.items()))


def _cell(
    p: ContinuousParameter | IntegerParameter | CategoricalParameter | StringParameter, text: str
) -> object:
    text = text.strip()
    if isinstance(p, StringParameter):
        return text
    if isinstance(p, CategoricalParameter):
        for c in p.choices:
            if str(c) == text:
                return c
        return text
    try:
        v = float(text)
    except ValueError:
        return text
    if isinstance(p, IntegerParameter) and math.isfinite(v) and v.is_integer():
        return int(v)
    return v


def read_pool(path: str | Path, space: SearchSpace) -> list[dict[str, ParamValue]]:
    """Read the candidate rows of a CSV file.

    Args:
        path: CSV file with a header naming (at least) every parameter of ``space``
            (read by :func:`models.csvfile.read_csv_table`: comma, semicolon or tab
            separated, UTF-8 with or without a byte-order mark, blank rows skipped).
        space: The search space each row must lie in.

    Returns:
        The rows as validated points, in file order, duplicates removed.

    Raises:
        InvalidCampaignError: If the file cannot be read, lacks a parameter column, or a row
            is not a point of the space (key ``planner.options.pool``).
    """
    key = "planner.options.pool"
    table = read_csv_table(path, key)
    rows = table.rows
    if not rows:
        raise InvalidCampaignError(str(path), [(key, "the pool file has no rows")])
    missing = [n for n in space.names if n not in table.header]
    if missing:
        raise InvalidCampaignError(
            str(path),
            [(key, f"no column for parameters {missing} (columns: {', '.join(table.header)})")],
        )
    numbers = [
        p.name for p in space.parameters if isinstance(p, (ContinuousParameter, IntegerParameter))
    ]
    units = table.units_cells(numbers)
    if units:
        raise InvalidCampaignError(
            str(path),
            [
                (
                    key,
                    f"row {table.lines[0]} looks like a row of units ({', '.join(units)}), not "
                    "a candidate: delete it and put units in the column names "
                    "(e.g. temperature_c)",
                )
            ],
        )
    out: list[dict[str, ParamValue]] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    broken: list[tuple[int, str]] = []
    for line, row in zip(table.lines, rows, strict=True):
        try:
            point = space.validate_point({p.name: _cell(p, row[p.name]) for p in space.parameters})
        except ParameterLimitError as exc:
            raise InvalidCampaignError(str(path), [(key, f"row {line}: {exc}")]) from exc
        violated = space.constraint_violations(point)
        if violated:
            broken.append((line, violated[0]))
            continue
        k = point_key(point)
        if k not in seen:
            seen.add(k)
            out.append(point)
    if broken:
        shown = "; ".join(f"row {r}: {why}" for r, why in broken[:3])
        more = f" (and {len(broken) - 3} more rows)" if len(broken) > 3 else ""
        raise InvalidCampaignError(
            str(path),
            [(key, f"{len(broken)} of {len(rows)} rows break a constraint: {shown}{more}")],
        )
    return out


def enumerate_space(space: SearchSpace, limit: int) -> list[dict[str, ParamValue]] | None:
    """Every point of a space of integer and categorical parameters, if at most ``limit``.

    Returns:
        The points, or ``None`` when the space has a continuous parameter or more points.
    """
    values: list[Sequence[ParamValue]] = []
    size = 1
    for p in space.parameters:
        if isinstance(p, (ContinuousParameter, StringParameter)):
            return None
        vals: Sequence[ParamValue] = (
            list(p.choices)
            if isinstance(p, CategoricalParameter)
            else list(range(p.lower, p.upper + 1))
        )
        size *= len(vals)
        if size > limit:
            return None
        values.append(vals)
    return [dict(zip(space.names, combo, strict=True)) for combo in itertools.product(*values)]


class CandidateSet:
    """A fixed list of candidate points and their model encoding.

    Args:
        encoder: Encoder of the search space.
        points: The candidates (validated points of the space).
        origin: Where they came from (``"pool"`` or ``"enumerated"``), for decisions.
    """

    def __init__(
        self, encoder: SpaceEncoder, points: Sequence[Mapping[str, ParamValue]], origin: str
    ) -> None:
        self.points = [dict(p) for p in points]
        self.origin = origin
        self.X = encoder.encode(self.points)
        self._index = {point_key(p): i for i, p in enumerate(self.points)}

    def __len__(self) -> int:
        return len(self.points)

    def available(self, used: Sequence[Mapping[str, ParamValue]]) -> list[int]:
        """Indices of the candidates not among ``used`` (measured or pending points)."""
        taken = {self._index.get(point_key(p)) for p in used}
        return [i for i in range(len(self.points)) if i not in taken]

    def nearest(self, x: Tensor, among: Sequence[int]) -> list[int]:
        """For each row of ``x`` (``q x d``), the index of the nearest candidate in ``among``."""
        sub = self.X[list(among)].to(x.device, x.dtype)
        picks = torch.cdist(x, sub).argmin(dim=-1).tolist()
        return [among[j] for j in picks]
