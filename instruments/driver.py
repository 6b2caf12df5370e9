"""The driver contract, action schemas, and the driver registry.

A driver is the code that makes one instrument do things. It declares its actions with
:class:`ActionSpec` (each parameter's type, limits and unit; each output; a timeout; whether
re-running the action is safe) and runs them in :meth:`Driver.run`. An
:class:`~instruments.server.InstrumentServer` hosts a driver behind the ZeroMQ protocol and
refuses any parameter outside the declared limits before the driver sees it.

Drivers register by name with :func:`register_driver`; registering a name twice is an error
at import time (as BoTorch's acquisition input constructors do).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.costs import NonNegativeCost, affine_cost
from models.errors import ParameterLimitError
from models.records import Measurement
from models.registry import Registry

PROTOCOL_VERSION = "sdlab/1"
"""The wire protocol version this package speaks (see ``docs/protocol.md``)."""

CURRENT_REQUEST: ContextVar[str | None] = ContextVar("sdlab_current_request", default=None)
"""The request id of the action a server is running, visible inside :meth:`Driver.run`."""


def current_request_id() -> str | None:
    """The request id of the action being run, when called from a driver's ``run`` that an
    :class:`~instruments.server.InstrumentServer` started (``None`` otherwise). A driver
    that keeps its own record per request (the ``manual`` driver's tasks) keys it by this.
    """
    return CURRENT_REQUEST.get()


class ParameterLimit(BaseModel):
    """What an action accepts for one parameter.

    Attributes:
        name: Parameter name.
        type: ``"number"``, ``"integer"`` or ``"string"``.
        minimum: Smallest accepted value (numbers and integers), inclusive.
        maximum: Largest accepted value, inclusive.
        choices: The accepted values, for ``"string"`` parameters (or enumerated numbers).
        unit: Unit of the value.
        required: Whether the action needs the parameter.
        max_rate_per_s: Largest change of a number parameter per second between two
            consecutive commands to the instrument that set it (in ``unit`` per second;
            e.g. a furnace's maximum heating ramp in degC/s). ``None``: no rate limit.
            The instrument cannot judge this from one request; the controller's safety
            gate enforces it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: Literal["number", "integer", "string"] = "number"
    minimum: float | None = None
    maximum: float | None = None
    choices: list[str | int | float] | None = None
    unit: str = ""
    required: bool = True
    max_rate_per_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _rate_needs_a_number(self) -> ParameterLimit:
        if self.max_rate_per_s is not None and self.type == "string":
            raise ValueError("max_rate_per_s applies to number and integer parameters only")
        return self

    def check(self, value: object, instrument: str | None = None) -> None:
        """Raise :class:`ParameterLimitError` unless ``value`` is within this limit."""
        if self.type in ("number", "integer"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ParameterLimitError(self.name, value, f"type {self.type}", instrument)
            try:
                as_float = float(value)  # an int beyond the float range overflows
            except OverflowError:
                as_float = math.inf
            if not math.isfinite(as_float):
                raise ParameterLimitError(self.name, value, "a finite number", instrument)
            if self.type == "integer" and not as_float.is_integer():
                raise ParameterLimitError(self.name, value, "type integer", instrument)
            if self.minimum is not None and value < self.minimum:
                raise ParameterLimitError(self.name, value, f"minimum {self.minimum}", instrument)
            if self.maximum is not None and value > self.maximum:
                raise ParameterLimitError(self.name, value, f"maximum {self.maximum}", instrument)
        elif not isinstance(value, str):
            raise ParameterLimitError(self.name, value, "type string", instrument)
        if self.choices is not None and value not in self.choices:
            raise ParameterLimitError(self.name, value, f"choices {self.choices!r}", instrument)


class OutputSpec(BaseModel):
    """One output of an action: a scalar or a raw array."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["scalar", "array"] = "scalar"
    unit: str = ""


class ActionSpec(BaseModel):
    """An action an instrument can perform.

    Attributes:
        name: Action name (``"measure"``, ``"anneal"``).
        parameters: Accepted parameters with their limits.
        outputs: What the action returns.
        timeout_s: How long the controller should wait for it before giving up, in seconds.
        retry_safe: Whether running it again (after a crash left its fate unknown) is safe.
            A measurement usually is; a synthesis that consumes a sample is not.
        description: Free text.
        cost: What one run costs, in the campaign's cost unit (0: not declared).
        cost_per: Further cost per unit of named number/integer parameters of the action
            (e.g. ``{"fidelity": 9.0}``), so one run costs
            ``cost + sum(cost_per[p] * parameters[p])`` (see :mod:`models.costs`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    parameters: list[ParameterLimit] = Field(default_factory=list)
    outputs: list[OutputSpec] = Field(default_factory=list)
    timeout_s: float = Field(default=60.0, gt=0)
    retry_safe: bool = False
    description: str = ""
    cost: NonNegativeCost = 0.0
    cost_per: dict[str, NonNegativeCost] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _cost_per_names_parameters(self) -> ActionSpec:
        kinds = {p.name: p.type for p in self.parameters}
        for name in self.cost_per:
            if name not in kinds:
                raise ValueError(f"cost_per.{name}: action {self.name!r} has no such parameter")
            if kinds[name] == "string":
                raise ValueError(f"cost_per.{name}: the parameter is not a number")
        return self

    def cost_of(self, parameters: Mapping[str, object]) -> float:
        """What one run with ``parameters`` costs (see :func:`models.costs.affine_cost`).

        Raises:
            ValueError: If a parameter named in ``cost_per`` is missing or not a number.
        """
        return affine_cost(self.cost, self.cost_per, parameters)

    def check(self, parameters: Mapping[str, object], instrument: str | None = None) -> None:
        """Raise :class:`ParameterLimitError` for the first parameter outside the limits.

        Unknown parameters and missing required ones are refused too.
        """
        known = {p.name for p in self.parameters}
        for name in parameters:
            if name not in known:
                raise ParameterLimitError(
                    name, parameters[name], f"action {self.name!r}: unknown parameter", instrument
                )
        for limit in self.parameters:
            if limit.name not in parameters:
                if limit.required:
                    raise ParameterLimitError(
                        limit.name, None, f"action {self.name!r}: required", instrument
                    )
                continue
            limit.check(parameters[limit.name], instrument)


class InstrumentDescription(BaseModel):
    """What an instrument says about itself in reply to ``describe``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    driver: str
    driver_version: str
    protocol: str = PROTOCOL_VERSION
    actions: list[ActionSpec]

    def action(self, name: str) -> ActionSpec:
        """The named action's spec.

        Raises:
            KeyError: If the instrument has no such action.
        """
        for a in self.actions:
            if a.name == name:
                return a
        raise KeyError(name)


class Driver(ABC):
    """Base class of instrument drivers.

    Subclasses set ``driver_name`` (through :func:`register_driver`) and ``version``,
    declare their actions in :meth:`actions` and perform them in :meth:`run`. A driver is
    hosted by an instrument server, which validates every parameter against the declared
    limits before calling :meth:`run`, runs at most one action at a time, and cancels the
    ``run`` coroutine when a client cancels the request.

    Args:
        name: The instrument's name (one driver class may serve many instruments).
    """

    driver_name: ClassVar[str] = ""
    version: ClassVar[str] = "0"

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def actions(self) -> list[ActionSpec]:
        """The actions this instrument offers, with their parameter limits."""

    @abstractmethod
    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Perform ``action`` with already-validated ``parameters``.

        Returns:
            One measurement per declared output.

        Raises:
            InstrumentError: When the action fails; ``retryable`` says whether trying again
                may help. Any other exception is reported as an internal driver error.
        """

    def describe(self) -> InstrumentDescription:
        """The description the server sends in reply to ``describe``."""
        return InstrumentDescription(
            name=self.name,
            driver=self.driver_name,
            driver_version=self.version,
            actions=self.actions(),
        )

    async def close(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release hardware resources; called once when the server stops."""

    async def safe_state(self) -> str:
        """Put the instrument in its safe state and say, in one line, what was done.

        Called by the server on an emergency stop (the ``safe_state`` message of
        ``docs/protocol.md``), after it has cancelled the running action. A furnace turns
        its heater off and ramps down, a pump stops, a robot parks. It must be safe to call
        at any time and more than once, whether an action ran or not.

        Returns:
            What was done, for the operator (``"heater off, ramping down to 25 degC"``).
            The default does nothing and returns ``"no safe state declared"``.

        Raises:
            InstrumentError: If the instrument could not be made safe (the operator is told).
        """
        return "no safe state declared"


def _name_driver(name: str, cls: type[Driver]) -> None:
    cls.driver_name = name


DRIVERS: Registry[Driver] = Registry("driver", _name_driver)
"""Every registered driver class, by name."""

_D = TypeVar("_D", bound=type[Driver])


def register_driver(name: str) -> Callable[[_D], _D]:
    """Class decorator registering a driver under ``name``.

    Raises:
        RegistryError: If ``name`` is already registered.
    """

    return DRIVERS.register(name)


def get_driver(name: str) -> type[Driver]:
    """The driver class registered as ``name``.

    Raises:
        RegistryError: If no driver has that name (the message lists the known ones).
    """
    return DRIVERS.get(name)


def driver_names() -> list[str]:
    """Names of every registered driver."""
    return DRIVERS.names()
