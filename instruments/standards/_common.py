"""Option models the standards' drivers share: declared parameters and outputs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from instruments.driver import ParameterLimit


class ParameterOptions(BaseModel):
    """A parameter an action accepts, as an ``[...parameters.NAME]`` options table.

    Attributes:
        type: ``"number"``, ``"integer"`` or ``"string"``.
        minimum: Smallest accepted value, inclusive, in ``unit``.
        maximum: Largest accepted value, inclusive, in ``unit``.
        choices: The accepted values (strings, or enumerated numbers).
        unit: Unit of the value.
        required: Whether the action needs it.
        max_rate_per_s: Largest change per second between two commands, in ``unit``/s
            (enforced by the controller's safety gate).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["number", "integer", "string"] = "number"
    minimum: float | None = None
    maximum: float | None = None
    choices: list[str | int | float] | None = None
    unit: str = ""
    required: bool = True
    max_rate_per_s: float | None = Field(default=None, gt=0)

    def limit(self, name: str) -> ParameterLimit:
        """The :class:`ParameterLimit` the action declares for ``name``."""
        return ParameterLimit(name=name, **self.model_dump())


class ActionOptions(BaseModel):
    """What every configured action declares beside what it does.

    Attributes:
        timeout_s: How long the controller waits for the action, in seconds.
        retry_safe: Whether running it again after a crash left its fate unknown is safe.
        description: Free text shown by ``describe``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float = Field(default=60.0, gt=0)
    retry_safe: bool = False
    description: str = ""


def import_error_hint(package: str, exc: ImportError) -> ImportError:
    """An :class:`ImportError` that says which extra provides ``package``."""
    return ImportError(f"{package} is not installed (pip install 'sdlab[lab]'): {exc}")
