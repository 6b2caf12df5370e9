"""Shared lab resources of a campaign: robot arms, furnace slots, crucibles.

A workflow step runs on an instrument, but in an autonomous lab it often needs more than
that instrument: the robot arm that carries the crucible in, a slot of a shared rack. The
``[[resources]]`` tables of a campaign declare such resources, each a pool of interchangeable
units (``capacity = 2`` makes ``arm-1`` and ``arm-2``) or of named ones (``units =
["crucible-A", "crucible-B"]``). A ``[[workflow]]`` step lists the resources it holds in
``needs``; the controller grants them together with the instrument, all or nothing. A
campaign's ``sample_container`` names the resource whose unit carries one experiment's
sample from its first step to its last (the crucible of the A-Lab: Szymanski et al.,
"An autonomous laboratory for the accelerated synthesis of novel materials", Nature 624,
86-91, 2023).

``docs/campaigns.md`` documents the keys, ``docs/resources.md`` how grants are scheduled.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.errors import Problem
from models.params import NAME_PATTERN

MAX_UNITS = 10_000
"""Most units one resource may have."""


class ResourceSpec(BaseModel):
    """One ``[[resources]]`` entry: a pool of units that steps hold while they run.

    Attributes:
        name: The resource's name, used in ``needs`` and ``sample_container``.
        capacity: Number of interchangeable units, named ``<name>-1`` .. ``<name>-N``.
        units: Names of the units instead (e.g. crucible labels); exactly one of
            ``capacity`` and ``units`` is given.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    capacity: int | None = Field(default=None, ge=1, le=MAX_UNITS)
    units: list[str] | None = Field(default=None, min_length=1, max_length=MAX_UNITS)

    @model_validator(mode="after")
    def _one_of(self) -> ResourceSpec:
        if (self.capacity is None) == (self.units is None):
            raise ValueError(f"resource {self.name!r}: give exactly one of capacity and units")
        if self.units is not None:
            for i, unit in enumerate(self.units):
                if not unit or len(unit) > 128 or unit != unit.strip():
                    raise ValueError(f"units[{i}]: {unit!r} is not a unit name")
                if unit in self.units[:i]:
                    raise ValueError(f"units[{i}]: {unit!r} is used twice")
        return self

    @property
    def unit_names(self) -> list[str]:
        """The names of the resource's units, in order."""
        if self.units is not None:
            return list(self.units)
        assert self.capacity is not None
        return [f"{self.name}-{i}" for i in range(1, self.capacity + 1)]


def resource_problems(
    resources: Sequence[ResourceSpec],
    needs: Sequence[Sequence[str]],
    kinds: set[str],
    sample_container: str | None,
) -> list[Problem]:
    """Cross checks of the resources against the workflow.

    Args:
        resources: The ``[[resources]]`` entries.
        needs: The ``needs`` of each workflow step, in workflow order.
        kinds: The instrument kinds of the campaign (a resource may not share a name).
        sample_container: The campaign's ``sample_container``.

    Returns:
        One problem per finding, with its key path (empty when all is well).
    """
    problems: list[Problem] = []
    names = [r.name for r in resources]
    for i, n in enumerate(names):
        if n in names[:i]:
            problems.append(Problem(("resources", i, "name"), f"{n!r} is used twice"))
        if n in kinds:
            problems.append(
                Problem(
                    ("resources", i, "name"),
                    f"{n!r} is also an instrument kind; a step already holds the instrument "
                    "it runs on",
                )
            )
    known = ", ".join(sorted(names)) or "none declared"
    for i, step_needs in enumerate(needs):
        for j, n in enumerate(step_needs):
            where = ("workflow", i, "needs", j)
            if n not in names:
                problems.append(Problem(where, f"unknown resource {n!r} ({known})"))
            elif n in step_needs[:j]:
                problems.append(Problem(where, f"{n!r} is listed twice"))
            elif n == sample_container:
                problems.append(
                    Problem(
                        where,
                        f"{n!r} is the sample container, held from the first step to the "
                        "last already",
                    )
                )
    if sample_container is not None and sample_container not in names:
        problems.append(
            Problem(("sample_container",), f"unknown resource {sample_container!r} ({known})")
        )
    return problems
