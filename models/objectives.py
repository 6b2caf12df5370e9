"""Objectives: what a campaign measures and which way is better."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from models.params import NAME_PATTERN


class Objective(BaseModel):
    """One measured quantity the campaign optimises.

    Attributes:
        name: Name of the measurement that carries the objective's value (an instrument
            action's output of the same name).
        direction: ``"maximize"`` or ``"minimize"``.
        unit: Unit of the value, for display.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    direction: Literal["maximize", "minimize"]
    unit: str = ""

    @property
    def sign(self) -> float:
        """``+1`` for maximisation, ``-1`` for minimisation: multiply to get "larger is better"."""
        return 1.0 if self.direction == "maximize" else -1.0

    def better(self, a: float, b: float) -> bool:
        """Whether value ``a`` is strictly better than ``b`` for this objective."""
        return self.sign * a > self.sign * b
