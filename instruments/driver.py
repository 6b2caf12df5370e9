"""The driver contract, action schemas, and the driver registry.

A driver is the code that makes one instrument do things. It declares its actions with
:class:`ActionSpec` (each parameter's type, limits and unit; each output; a timeout; whether
re-running the action is safe) and runs them in :meth:`Driver.run`. An
:class:`~instruments.server.InstrumentServer` hosts a driver behind the ZeroMQ protocol and
refuses any parameter outside the declared limits before the driver sees it.

Drivers register by name with :func:`register_driver`; registering a name twice is an error
at import time (as BoTorch's acquisition input constructors do). Drivers of installed
packages (sdlab's own included) are found through the ``sdlab.drivers`` entry-point group,
loaded lazily (see :mod:`models.registry`). ``docs/drivers.md`` says how to write one.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from models.costs import NonNegativeCost, affine_cost
from models.errors import ParameterLimitError
from models.records import Measurement
from models.registry import Registry

if TYPE_CHECKING:
    from instruments.server import InstrumentServer

_R = TypeVar("_R")

PROTOCOL_VERSION = "sdlab/1"
"""The wire protocol version this package speaks (see ``docs/protocol.md``)."""

FROM_WIRE: Mapping[str, Any] = {"from_wire": True}
"""Validation context of a description received from an instrument: unknown keys are
ignored there (``docs/protocol.md`` section 2), e.g.
``InstrumentDescription.model_validate(body, context=FROM_WIRE)``."""

CURRENT_REQUEST: ContextVar[str | None] = ContextVar("sdlab_current_request", default=None)
"""The request id of the action a server is running, visible inside :meth:`Driver.run`."""


def current_request_id() -> str | None:
    """The request id of the action being run, when called from a driver's ``run`` that an
    :class:`~instruments.server.InstrumentServer` started (``None`` otherwise). A driver
    that keeps its own record per request (the ``manual`` driver's tasks) keys it by this.
    """
    return CURRENT_REQUEST.get()


class WireModel(BaseModel):
    """A model that is also read from the wire.

    Built in Python (a driver declaring its actions) it refuses unknown keys, so a typo in a
    driver fails at once. Validated with the context :data:`FROM_WIRE` (what an instrument
    sent) it drops the keys it does not know, at every level, as receivers of ``sdlab/1``
    MUST: a newer server may send keys this version has never heard of.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_unknown_keys_from_the_wire(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and info.context and info.context.get("from_wire"):
            known = cls.model_fields
            return {k: v for k, v in data.items() if k in known}
        return data


class ParameterLimit(WireModel):
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


class OutputSpec(WireModel):
    """One output of an action: a scalar or a raw array."""

    name: str
    kind: Literal["scalar", "array"] = "scalar"
    unit: str = ""


class ActionSpec(WireModel):
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


class InstrumentDescription(WireModel):
    """What an instrument says about itself in reply to ``describe``."""

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


class NoOptions(BaseModel):
    """The options of a driver that takes none: an empty ``[instruments.options]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Driver(ABC):
    """Base class of instrument drivers.

    Subclasses set ``driver_name`` (through :func:`register_driver`) and ``version``,
    declare their options in ``Options``, their actions in :meth:`actions` and perform them
    in :meth:`run`. A driver is hosted by an instrument server, which calls
    :meth:`connect` once before serving, validates every parameter against the declared
    limits before calling :meth:`run`, runs at most one action at a time, and cancels the
    ``run`` coroutine when a client cancels the request.

    :meth:`run` runs in the server's event loop, beside the heartbeats: it must not block.
    A driver whose I/O blocks (pyserial, pyvisa, a grpc stub) derives from
    :class:`BlockingDriver` instead, whose calls run in a worker thread.

    Args:
        name: The instrument's name (one driver class may serve many instruments).
        options: The driver's settings (an instance of ``Options``, or a mapping that is
            validated into one); ``None``: the defaults.
        simulated: Run against the driver's simulated backend instead of the hardware
            (only for a class whose ``supports_simulation`` is true).

    Raises:
        ValueError: If ``simulated`` is asked of a driver without a simulated backend.
        pydantic.ValidationError: If ``options`` do not validate against ``Options``.
    """

    driver_name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    Options: ClassVar[type[BaseModel]] = NoOptions
    """The pydantic model of the ``[instruments.options]`` table (``extra="forbid"``)."""
    supports_simulation: ClassVar[bool] = False
    """Whether the driver carries a simulated backend (``simulated=True`` then uses it)."""

    def __init__(
        self,
        name: str,
        options: BaseModel | Mapping[str, Any] | None = None,
        *,
        simulated: bool = False,
    ) -> None:
        if simulated and not self.supports_simulation:
            raise ValueError(
                f"driver {self.driver_name or type(self).__name__!r} has no simulated backend"
            )
        self.name = name
        if options is None:
            options = self.Options()
        elif not isinstance(options, self.Options):
            data = options.model_dump() if isinstance(options, BaseModel) else dict(options)
            options = self.Options.model_validate(data)
        self.options: BaseModel = options
        self.simulated = simulated

    @abstractmethod
    def actions(self) -> list[ActionSpec]:
        """The actions this instrument offers, with their parameter limits.

        Called after :meth:`connect`, so a driver may discover them from the hardware.
        """

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

    async def connect(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Open the link to the hardware (or the simulated backend).

        The server calls it once, before it binds its socket; an exception stops the
        server from starting.
        """

    async def safe_state(self) -> str:
        """Put the instrument in its safe state (a furnace ramps down, a pump stops).

        Returns:
            One line saying what was done.
        """
        return "no safe state declared"

    async def close(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release hardware resources; called once when the server stops."""

    def make_server(self, address: str, **kwargs: Any) -> InstrumentServer:
        """The instrument server that hosts this driver (a gateway calls this).

        A driver that needs a special server (the fault-injecting simulators) overrides it.

        Args:
            address: Endpoint to bind.
            **kwargs: Keyword arguments of :class:`~instruments.server.InstrumentServer`.
        """
        from instruments.server import InstrumentServer

        return InstrumentServer(self, address, **kwargs)


class BlockingDriver(Driver):
    """A driver whose I/O blocks (pyserial, pyvisa, grpc stubs).

    Subclasses implement :meth:`run_blocking` (and, if they need them,
    :meth:`connect_blocking`, :meth:`close_blocking` and :meth:`safe_state_blocking`) as
    plain functions that may block. The async methods the server calls run them in a
    dedicated worker thread, one per instrument, so calls to one instrument stay
    serialised in the order they were made while the server's event loop (and its
    heartbeats) keeps running.

    A cancelled action cannot interrupt a thread: the request is reported cancelled at
    once, but the next call waits until :meth:`run_blocking` returns. Keep each blocking
    call short (poll the instrument in a loop with a short read timeout, checking
    :attr:`cancel_requested`, which is true while a cancelled call still runs) or make
    :meth:`safe_state_blocking` able to stop it.

    :meth:`safe_state_blocking` runs in a thread of its own, not behind a running action:
    an emergency stop must not wait for the action it stops, so it must be safe to call
    while :meth:`run_blocking` is working (e.g. write the stop command under a lock).
    """

    def __init__(
        self,
        name: str,
        options: BaseModel | Mapping[str, Any] | None = None,
        *,
        simulated: bool = False,
    ) -> None:
        super().__init__(name, options, simulated=simulated)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sdlab-{name}")
        self.cancel_requested = False

    async def _in_thread(self, fn: Callable[..., _R], *args: Any) -> _R:
        """Run ``fn(*args)`` in the instrument's worker thread; a cancelled caller stops
        waiting at once and :attr:`cancel_requested` stays true until ``fn`` returns."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, fn, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if not future.done():
                self.cancel_requested = True
                future.add_done_callback(self._clear_cancel)
            raise

    def _clear_cancel(self, _: object) -> None:
        self.cancel_requested = False

    @abstractmethod
    def run_blocking(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Perform ``action`` (as :meth:`Driver.run`), blocking the calling thread."""

    def connect_blocking(self) -> None:
        """Open the link to the hardware, blocking (see :meth:`Driver.connect`)."""

    def close_blocking(self) -> None:
        """Release the hardware, blocking (see :meth:`Driver.close`)."""

    def safe_state_blocking(self) -> str:
        """Put the instrument in its safe state, blocking (see :meth:`Driver.safe_state`)."""
        return "no safe state declared"

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Run :meth:`run_blocking` in the instrument's worker thread."""
        return await self._in_thread(self.run_blocking, action, dict(parameters))

    async def connect(self) -> None:
        """Run :meth:`connect_blocking` in the instrument's worker thread."""
        await self._in_thread(self.connect_blocking)

    async def safe_state(self) -> str:
        """Run :meth:`safe_state_blocking` in a thread of its own (not behind an action)."""
        return await asyncio.to_thread(self.safe_state_blocking)

    async def close(self) -> None:
        """Run :meth:`close_blocking` after any running action, then end the worker."""
        try:
            await self._in_thread(self.close_blocking)
        finally:
            self._executor.shutdown(wait=False)


def _name_driver(name: str, cls: type[Driver]) -> None:
    cls.driver_name = name


DRIVERS: Registry[Driver] = Registry(
    "driver",
    _name_driver,
    group="sdlab.drivers",
    builtins={"serial-hotplate": "instruments.hotplate"},
)
"""Every registered driver class, by name; other packages' drivers come through the
``sdlab.drivers`` entry-point group, loaded on the first lookup of an unknown name."""

_D = TypeVar("_D", bound=type[Driver])


def register_driver(name: str) -> Callable[[_D], _D]:
    """Class decorator registering a driver under ``name``.

    Raises:
        RegistryError: If ``name`` is already registered.
    """

    return DRIVERS.register(name)


def get_driver(name: str) -> type[Driver]:
    """The driver class registered as ``name`` (built-in, or from an installed package).

    Raises:
        RegistryError: If no driver has that name (the message lists the known ones).
    """
    return DRIVERS.get(name)


def driver_names() -> list[str]:
    """Names of every registered driver (the ``sdlab.drivers`` entry points loaded)."""
    return DRIVERS.names()
