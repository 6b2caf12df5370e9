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
    """An ordered collection of uniquely named parameters."""

    parameters: list[Parameter] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> SearchSpace:
        seen: set[str] = set()
        for p in self.parameters:
            if p.name in seen:
                raise ValueError(f"parameter name {p.name!r} is used twice")
            seen.add(p.name)
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

    def is_continuous(self) -> bool:
        """Whether every parameter is continuous."""
        return all(isinstance(p, ContinuousParameter) for p in self.parameters)

    def subset(self, names: Sequence[str]) -> SearchSpace:
        """The sub-space of the named parameters, in the order given."""
        return SearchSpace(parameters=[self[n] for n in names])
