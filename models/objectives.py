"""Objectives: what a campaign measures, which way is better, and what must hold.

An ``[[objectives]]`` entry is one of three kinds:

* ``kind = "objective"`` (the default) with ``direction = "maximize"`` or ``"minimize"``:
  a quantity to optimise. Several such entries make the campaign multi-objective (the
  planner looks for the Pareto front). ``reference`` optionally fixes that objective's
  coordinate of the hypervolume reference point (the worst value still worth having).
* ``kind = "objective"`` with ``target = t``: get the value as close to ``t`` as possible
  ("band gap closest to 1.4 eV"); its utility is ``-|y - t|`` (absolute distance, in the
  objective's units), and ``direction`` may be left out.
* ``kind = "constraint"`` with ``lower`` and/or ``upper``: an outcome constraint (``cost <=
  10``); a result is acceptable when ``lower <= y <= upper``. The quantity is measured and
  modelled, but not optimised.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.params import NAME_PATTERN


class Objective(BaseModel):
    """One measured quantity the campaign optimises or constrains.

    Attributes:
        name: Name of the measurement that carries the objective's value (an instrument
            action's output of the same name).
        direction: ``"maximize"`` or ``"minimize"``. Optional for a target (it is then
            ``"minimize"``: the distance to the target is minimised) and for a constraint
            (``"maximize"``, unused).
        unit: Unit of the value, for display.
        kind: ``"objective"`` (optimised) or ``"constraint"`` (must lie within bounds).
        target: For an objective: the value to get closest to.
        lower: For a constraint: the smallest acceptable value.
        upper: For a constraint: the largest acceptable value.
        reference: For an objective of a multi-objective campaign: its coordinate of the
            hypervolume reference point, in its own units (inferred when left out).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    direction: Literal["maximize", "minimize"]
    unit: str = ""
    kind: Literal["objective", "constraint"] = "objective"
    target: float | None = None
    lower: float | None = None
    upper: float | None = None
    reference: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_direction(cls, data: Any) -> Any:
        if isinstance(data, dict) and "direction" not in data:
            if data.get("kind") == "constraint":
                return {**data, "direction": "maximize"}
            if data.get("target") is not None:
                return {**data, "direction": "minimize"}
        return data

    @model_validator(mode="after")
    def _check_kind(self) -> Objective:
        for key in ("target", "lower", "upper", "reference"):
            v = getattr(self, key)
            if v is not None and not math.isfinite(v):
                raise ValueError(f"{key} must be a finite number")
        if self.kind == "constraint":
            if self.lower is None and self.upper is None:
                raise ValueError("a constraint needs lower, upper or both")
            if self.lower is not None and self.upper is not None and self.lower > self.upper:
                raise ValueError(f"lower ({self.lower}) exceeds upper ({self.upper})")
            if self.target is not None or self.reference is not None:
                raise ValueError("target and reference apply to objectives, not constraints")
        elif self.lower is not None or self.upper is not None:
            raise ValueError('lower and upper apply to kind = "constraint"')
        elif self.target is not None and self.direction != "minimize":
            raise ValueError(
                "a target is approached by minimising the distance: leave out "
                'direction or set it to "minimize"'
            )
        return self

    @property
    def is_constraint(self) -> bool:
        """Whether this entry is an outcome constraint rather than an objective."""
        return self.kind == "constraint"

    @property
    def sign(self) -> float:
        """``+1`` for maximisation, ``-1`` for minimisation: multiply to get "larger is better".

        Targets and constraints are modelled on their raw values: their sign is ``+1``.
        """
        if self.kind == "constraint" or self.target is not None:
            return 1.0
        return 1.0 if self.direction == "maximize" else -1.0

    def utility(self, value: float) -> float:
        """The value on a larger-is-better scale: ``sign * y``, or ``-|y - target|``.

        Raises:
            ValueError: For a constraint, which has no utility.
        """
        if self.kind == "constraint":
            raise ValueError(f"{self.name!r} is a constraint; it has no utility")
        if self.target is not None:
            return -abs(value - self.target)
        return self.sign * value

    def satisfied(self, value: float) -> bool:
        """Whether ``value`` meets this constraint (always ``True`` for an objective)."""
        if self.kind != "constraint":
            return True
        return (self.lower is None or value >= self.lower) and (
            self.upper is None or value <= self.upper
        )

    def better(self, a: float, b: float) -> bool:
        """Whether value ``a`` is strictly better than ``b`` for this objective."""
        return self.utility(a) > self.utility(b)
