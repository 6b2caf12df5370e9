"""Parameters and search spaces.

A search space is an ordered list of named parameters. Continuous parameters carry bounds
and a unit (``temperature_c`` in degrees Celsius, say); integer parameters are bounded
integers; categorical parameters have a finite list of choices. A point of the space is a
plain ``dict`` mapping parameter names to values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.constraints import ParameterConstraint, violation
from models.errors import ParameterLimitError

ParamValue = Union[float, int, str]
"""The value of one parameter in one experiment."""

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContinuousParameter(_Base):
    """A real-valued parameter in ``[lower, upper]``.

    Attributes:
        name: Unique name within the search space.
        lower: Lower bound, in ``unit``.
        upper: Upper bound, in ``unit``; must exceed ``lower``.
        unit: Unit of the value (free text, e.g. ``"degC"``, ``"s"``), ``""`` if unitless.
        log_scale: Whether planners should search the parameter on a log scale.
    """

    type: Literal["continuous"] = "continuous"
    name: str = Field(pattern=NAME_PATTERN)
    lower: float
    upper: float
    unit: str = ""
    log_scale: bool = False

    @model_validator(mode="after")
    def _check_bounds(self) -> ContinuousParameter:
        if not (math.isfinite(self.lower) and math.isfinite(self.upper)):
            raise ValueError("bounds must be finite numbers")
        if self.upper <= self.lower:
            raise ValueError(f"upper ({self.upper}) must be greater than lower ({self.lower})")
        if self.log_scale and self.lower <= 0:
            raise ValueError("log_scale needs lower > 0")
        return self

    def check(self, value: object) -> float:
        """Return ``value`` as a float, or raise if it is not a number within the bounds."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParameterLimitError(self.name, value, "type: expected a number")
        v = float(value)
        if not math.isfinite(v) or v < self.lower or v > self.upper:
            raise ParameterLimitError(self.name, value, f"bounds [{self.lower}, {self.upper}]")
        return v


class IntegerParameter(_Base):
    """An integer parameter in ``[lower, upper]`` (both inclusive)."""

    type: Literal["integer"] = "integer"
    name: str = Field(pattern=NAME_PATTERN)
    lower: int
    upper: int
    unit: str = ""

    @model_validator(mode="after")
    def _check_bounds(self) -> IntegerParameter:
        if self.upper <= self.lower:
            raise ValueError(f"upper ({self.upper}) must be greater than lower ({self.lower})")
        return self

    def check(self, value: object) -> int:
        """Return ``value`` as an int, or raise if it is not an integer within the bounds."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParameterLimitError(self.name, value, "type: expected an integer")
        if isinstance(value, float) and not value.is_integer():
            raise ParameterLimitError(self.name, value, "type: expected an integer")
        v = int(value)
        if v < self.lower or v > self.upper:
            raise ParameterLimitError(self.name, value, f"bounds [{self.lower}, {self.upper}]")
        return v


class CategoricalParameter(_Base):
    """A parameter taking one of a finite list of choices (strings or numbers)."""

    type: Literal["categorical"] = "categorical"
    name: str = Field(pattern=NAME_PATTERN)
    choices: list[Union[str, int, float]] = Field(min_length=2)
    unit: str = ""

    @model_validator(mode="after")
    def _check_choices(self) -> CategoricalParameter:
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError("choices must be distinct")
        return self

    def check(self, value: object) -> ParamValue:
        """Return ``value`` if it is one of the choices, else raise."""
        for c in self.choices:
            if value == c and type(value) is type(c):
                return c
        raise ParameterLimitError(self.name, value, f"choices {self.choices!r}")


Parameter = Annotated[
    Union[ContinuousParameter, IntegerParameter, CategoricalParameter],
    Field(discriminator="type"),
]
"""Any parameter; the ``type`` key (``continuous``, ``integer``, ``categorical``) selects it."""


class SearchSpace(_Base):
    """An ordered collection of uniquely named parameters, optionally constrained.

    Attributes:
        parameters: The parameters, in order.
        constraints: Linear and mixture constraints between continuous, linear-scale
            parameters (see :mod:`models.constraints`). :meth:`validate_point` checks
            bounds only; :meth:`check_constraints` checks these.
    """

    parameters: list[Parameter] = Field(min_length=1)
    constraints: list[ParameterConstraint] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> SearchSpace:
        seen: set[str] = set()
        for p in self.parameters:
            if p.name in seen:
                raise ValueError(f"parameter name {p.name!r} is used twice")
            seen.add(p.name)
        for i, c in enumerate(self.constraints):
            problem = _constraint_problem(self, c)
            if problem:
                raise ValueError(f"constraints[{i}]: {problem}")
        return self

    @property
    def names(self) -> list[str]:
        """Parameter names, in declaration order."""
        return [p.name for p in self.parameters]

    def __getitem__(
        self, name: str
    ) -> ContinuousParameter | IntegerParameter | CategoricalParameter:
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(name)

    def __len__(self) -> int:
        return len(self.parameters)

    def validate_point(self, point: Mapping[str, object]) -> dict[str, ParamValue]:
        """Check a point against the space and return it normalised and in parameter order.

        Args:
            point: Mapping of every parameter name to a value.

        Returns:
            A new dict with each value cast to its parameter's type.

        Raises:
            ParameterLimitError: If a parameter is missing, unknown, or out of its limits.
        """
        unknown = set(point) - set(self.names)
        if unknown:
            name = sorted(unknown)[0]
            raise ParameterLimitError(name, point[name], "search space: unknown parameter")
        out: dict[str, ParamValue] = {}
        for p in self.parameters:
            if p.name not in point:
                raise ParameterLimitError(p.name, None, "search space: missing value")
            out[p.name] = p.check(point[p.name])
        return out

    def constraint_violations(self, point: Mapping[str, object]) -> list[str]:
        """Every constraint of the space that ``point`` violates, described.

        Args:
            point: A point whose constrained parameters are numbers (bounds are not checked).

        Returns:
            One message per violated constraint (empty when the point satisfies all).

        Raises:
            ParameterLimitError: If a constrained parameter is missing or not a number.
        """
        found = (violation(c, {n: _number(point, n) for n in c.terms()}) for c in self.constraints)
        return [v for v in found if v is not None]

    def check_constraints(self, point: Mapping[str, object]) -> None:
        """Raise unless ``point`` satisfies every linear and mixture constraint of the space.

        The safety gate calls this after :meth:`validate_point` (which checks bounds).

        Args:
            point: A point of the space.

        Raises:
            ParameterLimitError: Naming the first parameter of the first violated
                constraint, with the constraint and the value of its sum as the limit.
        """
        for c in self.constraints:
            message = violation(c, {n: _number(point, n) for n in c.terms()})
            if message is not None:
                first = next(iter(c.terms()))
                raise ParameterLimitError(first, point.get(first), f"constraint {message}")

    def is_continuous(self) -> bool:
        """Whether every parameter is continuous."""
        return all(isinstance(p, ContinuousParameter) for p in self.parameters)

    def subset(self, names: Sequence[str]) -> SearchSpace:
        """The sub-space of the named parameters, in the order given.

        Constraints are kept when all their parameters are in the sub-space.
        """
        keep = [c for c in self.constraints if set(c.terms()) <= set(names)]
        return SearchSpace(parameters=[self[n] for n in names], constraints=keep)


def _number(point: Mapping[str, object], name: str) -> float:
    v = point.get(name)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ParameterLimitError(name, v, "constraint: expected a number")
    return float(v)


def _constraint_problem(space: SearchSpace, constraint: ParameterConstraint) -> str | None:
    """Why ``constraint`` cannot apply to ``space`` (or ``None``)."""
    low = high = 0.0
    for name, coef in constraint.terms().items():
        if name not in space.names:
            return f"unknown parameter {name!r}"
        p = space[name]
        if not isinstance(p, ContinuousParameter):
            return f"parameter {name!r} must be continuous"
        if p.log_scale:
            return f"parameter {name!r} is on a log scale; constraints must be linear"
        low += min(coef * p.lower, coef * p.upper)
        high += max(coef * p.lower, coef * p.upper)
    lo, hi = constraint.sum_bounds()
    if (lo is not None and high < lo) or (hi is not None and low > hi):
        return (
            f"{constraint.describe()} cannot hold within the parameters' bounds "
            f"(the sum ranges over [{low:g}, {high:g}])"
        )
    return None
