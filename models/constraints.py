"""Linear constraints between continuous parameters, and mixtures (compositions).

A campaign restricts its search space with ``[[parameter_constraints]]`` tables:

* ``type = "linear"``: ``lower <= sum_i coefficients[i] * x_i <= upper`` (either bound may
  be left out), e.g. ``x1 + 2 x2 <= 1`` is ``coefficients = { x1 = 1.0, x2 = 2.0 }``,
  ``upper = 1.0``.
* ``type = "mixture"``: the named parameters are the fractions of a composition and sum to
  ``total`` (default 1): the simplex of a ternary or quaternary material system. Each
  component's own ``lower``/``upper`` bounds still apply, which gives per-component limits.

Both are linear in the parameters' values, so they apply to continuous parameters on a
linear scale only (a log-scale parameter would make them non-linear in the space the
planners search). Points are checked with a tolerance (:data:`TOLERANCE`, relative to the
size of the terms), because a fraction written as a decimal rarely sums to exactly one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

logger = logging.getLogger(__name__)

__all__ = ["TOLERANCE", "LinearConstraint", "MixtureConstraint", "ParameterConstraint"]

TOLERANCE = 1e-6
"""Relative tolerance of constraint checks (times ``max(1, sum |a_i x_i|, |bound|)``)."""


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LinearConstraint(_Base):
    """``lower <= sum_i coefficients[name_i] * value_i <= upper``.

    Attributes:
        coefficients: Coefficient of each parameter (by name); at least one, none zero.
        lower: Smallest allowed value of the sum (``None``: no lower bound).
        upper: Largest allowed value of the sum (``None``: no upper bound).
    """

    type: Literal["linear"] = "linear"
    coefficients: dict[str, float] = Field(min_length=1)
    lower: float | None = None
    upper: float | None = None

    @model_validator(mode="after")
    def _check(self) -> LinearConstraint:
        if self.lower is None and self.upper is None:
            raise ValueError("a linear constraint needs lower, upper or both")
        for name, c in self.coefficients.items():
            if not math.isfinite(c) or c == 0.0:
                raise ValueError(f"coefficient of {name!r} must be a non-zero finite number")
        for b in (self.lower, self.upper):
            if b is not None and not math.isfinite(b):
                raise ValueError("bounds must be finite numbers")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ValueError(f"lower ({self.lower}) exceeds upper ({self.upper})")
        return self

    def terms(self) -> dict[str, float]:
        """Coefficient of each parameter in the sum."""
        return dict(self.coefficients)

    def sum_bounds(self) -> tuple[float | None, float | None]:
        """``(lower, upper)`` of the sum; equal for an equality."""
        return self.lower, self.upper

    def describe(self) -> str:
        """The constraint as readable text, e.g. ``"1*x1 + 2*x2 <= 1"``."""
        text = " + ".join(f"{c:g}*{n}" for n, c in self.coefficients.items())
        if self.lower is not None and self.upper is not None:
            if self.lower == self.upper:
                return f"{text} == {self.upper:g}"
            return f"{self.lower:g} <= {text} <= {self.upper:g}"
        if self.upper is not None:
            return f"{text} <= {self.upper:g}"
        return f"{text} >= {self.lower:g}"


class MixtureConstraint(_Base):
    """The named parameters are fractions that sum to ``total``.

    Attributes:
        parameters: Names of the components (at least two, distinct).
        total: What the fractions sum to (``1.0``; ``100.0`` for percentages).
    """

    type: Literal["mixture"] = "mixture"
    parameters: list[str] = Field(min_length=2)
    total: float = Field(default=1.0, gt=0.0)

    @model_validator(mode="after")
    def _check(self) -> MixtureConstraint:
        if len(set(self.parameters)) != len(self.parameters):
            raise ValueError("mixture components must be distinct")
        if not math.isfinite(self.total):
            raise ValueError("total must be a finite number")
        return self

    def terms(self) -> dict[str, float]:
        """Coefficient 1 for every component."""
        return {n: 1.0 for n in self.parameters}

    def sum_bounds(self) -> tuple[float | None, float | None]:
        """``(total, total)``: an equality."""
        return self.total, self.total

    def describe(self) -> str:
        """The constraint as readable text, e.g. ``"a + b + c == 1"``."""
        return f"{' + '.join(self.parameters)} == {self.total:g}"


ParameterConstraint = Annotated[
    Union[LinearConstraint, MixtureConstraint], Field(discriminator="type")
]
"""Any parameter constraint; the ``type`` key (``linear``, ``mixture``) selects it."""


def violation(
    constraint: LinearConstraint | MixtureConstraint, point: Mapping[str, float]
) -> str | None:
    """Why ``point`` violates ``constraint``, or ``None`` when it satisfies it.

    Args:
        constraint: The constraint.
        point: Values of (at least) the constraint's parameters, as numbers.

    Returns:
        A message such as ``"x1 + x2 == 1 (sum is 1.2)"``, or ``None``.
    """
    terms = [c * float(point[n]) for n, c in constraint.terms().items()]
    total = math.fsum(terms)
    lo, hi = constraint.sum_bounds()
    scale = max([1.0, *(abs(t) for t in terms), *(abs(b) for b in (lo, hi) if b is not None)])
    tol = TOLERANCE * scale
    if (lo is not None and total < lo - tol) or (hi is not None and total > hi + tol):
        return f"{constraint.describe()} (sum is {total:.9g})"
    return None
