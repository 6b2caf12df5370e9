"""bluesky / ophyd-async devices: move motors, trigger and read detectors, as actions.

The options build the devices (an import path and constructor keyword arguments each, as a
bluesky startup file would) and connect them, with ``mock=True`` when the instrument runs
simulated (ophyd-async's own mock signal backend, so the same device classes and the same
driver code run). Each configured action sets movables from its parameters (all at once,
waiting for every status), triggers detectors, and reads readables; every numeric field of
the readings becomes a measurement, named by its reading key (``-`` replaced by ``_``)
unless renamed.

This driver runs ophyd-async in the instrument server's event loop; it is the bluesky
*devices* that it drives, not a RunEngine (no plans, documents or Tiled here: sdlab's
store keeps the record).

ophyd-async: https://blueskyproject.io/ophyd-async; bluesky protocols (``Movable``,
``Triggerable``, ``Readable``, ``Stoppable``): https://blueskyproject.io/bluesky.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from instruments.driver import ActionSpec, Driver, OutputSpec, ParameterLimit, register_driver
from instruments.standards._common import ActionOptions, ParameterOptions
from models.errors import InstrumentError
from models.records import Measurement

logger = logging.getLogger(__name__)


class DeviceOptions(BaseModel):
    """One object to build: an ophyd-async device or a helper it needs.

    Attributes:
        cls: Import path of the class, ``"package.module.Class"`` or
            ``"package.module:Class"`` (TOML key ``class``).
        kwargs: Constructor keyword arguments.
        refs: Constructor keyword arguments that are other entries of ``devices``,
            by entry name (``{pattern_generator = "pattern"}``); entries are built in order.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    cls: str = Field(alias="class", pattern=r"^[\w.]+[:.]\w+$")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    refs: dict[str, str] = Field(default_factory=dict)


class SetOptions(ParameterOptions):
    """A parameter that sets a movable (a motor's position, a temperature setpoint).

    Attributes:
        device: The movable, as ``entry`` or ``entry.child.child`` (``"stage.x"``).
    """

    device: str

    def limit(self, name: str) -> ParameterLimit:
        """The :class:`ParameterLimit` the action declares for ``name``."""
        return ParameterLimit(name=name, **self.model_dump(exclude={"device"}))


class OphydAction(ActionOptions):
    """A configured action: set, then trigger, then read.

    Attributes:
        set: Movables set from parameters, by parameter name (with the parameter's limits).
        trigger: Devices triggered after the sets, in parallel.
        read: Readables read last; each numeric reading field is an output.
        stage: Devices staged before the action and unstaged after it.
        rename: Output names by reading key (default: the key with ``-`` as ``_``).
        units: Output units by output name (default: the device's declared units).
    """

    set: dict[str, SetOptions] = Field(default_factory=dict)
    trigger: list[str] = Field(default_factory=list)
    read: list[str] = Field(default_factory=list)
    stage: list[str] = Field(default_factory=list)
    rename: dict[str, str] = Field(default_factory=dict)
    units: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _does_something(self) -> OphydAction:
        if not (self.set or self.trigger or self.read):
            raise ValueError("an action sets, triggers or reads something")
        return self


class OphydOptions(BaseModel):
    """Options of the ``ophyd`` driver (an ``[instruments.options]`` table).

    Attributes:
        devices: The objects to build, by name, in order (each device is named so).
        mock: Connect every device with ``mock=True`` even when not simulated.
        connect_timeout_s: How long connecting all devices may take, in seconds.
        actions: The actions, by name.
        stop_on_safe_state: The devices whose ``stop()`` ``safe_state`` calls (default:
            every device that has one).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: dict[str, DeviceOptions] = Field(min_length=1)
    mock: bool = False
    connect_timeout_s: float = Field(default=10.0, gt=0)
    actions: dict[str, OphydAction] = Field(min_length=1)
    stop_on_safe_state: list[str] | None = None

    @model_validator(mode="after")
    def _names_exist(self) -> OphydOptions:
        names = list(self.devices)
        for i, (name, dev) in enumerate(self.devices.items()):
            for kw, ref in dev.refs.items():
                if ref not in names[:i]:
                    raise ValueError(f"devices.{name}.refs.{kw}: no earlier device {ref!r}")
        for a, action in self.actions.items():
            paths = [(f"set.{p}.device", s.device) for p, s in action.set.items()]
            paths += [
                (f"{k}[{j}]", d)
                for k in ("trigger", "read", "stage")
                for j, d in enumerate(getattr(action, k))
            ]
            for key, path in paths:
                if path.split(".")[0] not in self.devices:
                    raise ValueError(f"actions.{a}.{key}: no device {path.split('.')[0]!r}")
        for name in self.stop_on_safe_state or []:
            if name not in self.devices:
                raise ValueError(f"stop_on_safe_state: no device {name!r}")
        return self


def _import(path: str) -> Any:
    module, _, attr = path.rpartition(":") if ":" in path else path.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _output_name(key: str) -> str:
    return key.replace("-", "_")


@register_driver("ophyd")
class OphydDriver(Driver):
    """ophyd-async devices built from the options, driven by configured actions.

    Args:
        name: The instrument's name.
        options: An :class:`OphydOptions`.
        simulated: Connect the devices with ``mock=True`` (ophyd-async's mock backend).
    """

    version = "1"
    Options = OphydOptions
    supports_simulation = True

    def __init__(
        self, name: str, options: BaseModel | None = None, *, simulated: bool = False
    ) -> None:
        super().__init__(name, options, simulated=simulated)
        assert isinstance(self.options, OphydOptions)
        self.opts: OphydOptions = self.options
        self.objects: dict[str, Any] = {}
        """The built objects, by entry name."""
        self._outputs: dict[str, dict[str, OutputSpec]] = {}  # action -> reading key -> spec
        self._specs: list[ActionSpec] = []

    def device(self, path: str) -> Any:
        """The device (or child device / signal) at ``entry.child...``."""
        first, *rest = path.split(".")
        obj = self.objects[first]
        for part in rest:
            obj = getattr(obj, part)
        return obj

    async def connect(self) -> None:
        """Build every entry, connect the devices, and discover the readings' fields.

        Raises:
            InstrumentError: ``bad_options`` naming ``devices.<name>`` when a class cannot
                be imported or built, ``connect_failed`` (retryable) when a device does not
                connect.
        """
        from ophyd_async.core import Device

        for name, dev in self.opts.devices.items():
            try:
                cls = _import(dev.cls)
                kwargs = dict(dev.kwargs)
                kwargs.update({kw: self.objects[ref] for kw, ref in dev.refs.items()})
                if "name" in inspect.signature(cls).parameters:
                    kwargs.setdefault("name", name)
                self.objects[name] = obj = cls(**kwargs)
            except Exception as exc:
                raise InstrumentError(
                    self.name, "bad_options", f"devices.{name}: {exc}", field=f"devices.{name}"
                ) from exc
            if isinstance(obj, Device) and not obj.name:
                obj.set_name(name)
        devices = {k: v for k, v in self.objects.items() if isinstance(v, Device)}
        mock = self.simulated or self.opts.mock
        try:
            await asyncio.gather(
                *(
                    d.connect(mock=mock, timeout=self.opts.connect_timeout_s)
                    for d in devices.values()
                )
            )
        except Exception as exc:
            raise InstrumentError(self.name, "connect_failed", str(exc), retryable=True) from exc
        specs = []
        for a, action in self.opts.actions.items():
            outputs: dict[str, OutputSpec] = {}
            for path in action.read:
                described = await self.device(path).describe()
                for key, data_key in described.items():
                    dtype = data_key.get("dtype")
                    if dtype not in ("number", "integer", "array"):
                        continue
                    out = action.rename.get(key, _output_name(key))
                    unit = action.units.get(out, data_key.get("units") or "")
                    kind = "array" if dtype == "array" else "scalar"
                    outputs[key] = OutputSpec(name=out, kind=kind, unit=unit)
            self._outputs[a] = outputs
            specs.append(
                ActionSpec(
                    name=a,
                    parameters=[s.limit(p) for p, s in action.set.items()],
                    outputs=list(outputs.values()),
                    timeout_s=action.timeout_s,
                    retry_safe=action.retry_safe,
                    description=action.description,
                )
            )
        self._specs = specs
        logger.info("instrument %s: %d devices connected (mock=%s)", self.name, len(devices), mock)

    def actions(self) -> list[ActionSpec]:
        """The configured actions, with the outputs discovered at :meth:`connect`.

        Raises:
            RuntimeError: Before :meth:`connect`.
        """
        if not self._specs:
            raise RuntimeError(f"instrument {self.name!r}: actions are discovered at connect()")
        return list(self._specs)

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Set, trigger and read as the action is configured.

        Cancelling the run cancels the devices' statuses (a motor stops where it is).

        Raises:
            InstrumentError: ``unknown_action``; ``device_failed`` when a status fails.
        """
        spec = self.opts.actions.get(action)
        if spec is None or action not in self._outputs:
            raise InstrumentError(self.name, "unknown_action", f"no action {action!r}")
        staged = [self.device(p) for p in spec.stage]
        try:
            for dev in staged:
                await dev.stage()
            moves = [
                self.device(s.device).set(parameters[p])
                for p, s in spec.set.items()
                if p in parameters
            ]
            await asyncio.gather(*moves)
            await asyncio.gather(*(self.device(p).trigger() for p in spec.trigger))
            readings: dict[str, Any] = {}
            for path in spec.read:
                readings.update(await self.device(path).read())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise InstrumentError(
                self.name, "device_failed", f"{type(exc).__name__}: {exc}", retryable=False
            ) from exc
        finally:
            for dev in reversed(staged):
                await dev.unstage()
        out = []
        for key, ospec in self._outputs[action].items():
            value = readings[key]["value"]
            if ospec.kind == "array":
                out.append(Measurement(name=ospec.name, array=_to_list(value), unit=ospec.unit))
            else:
                number = float(value)
                if not math.isfinite(number):
                    raise InstrumentError(self.name, "bad_answer", f"{key}: {value!r}")
                out.append(Measurement(name=ospec.name, value=number, unit=ospec.unit))
        return out

    async def safe_state(self) -> str:
        """Call ``stop(success=False)`` on the movables (every device with a ``stop``)."""
        names = self.opts.stop_on_safe_state
        if names is None:
            names = [k for k, v in self.objects.items() if callable(getattr(v, "stop", None))]
        if not names:
            return "no stoppable device"
        await asyncio.gather(*(self.objects[n].stop(success=False) for n in names))
        return "stopped " + ", ".join(names)


def _to_list(value: Any) -> list[Any]:
    tolist = getattr(value, "tolist", None)
    return list(tolist()) if callable(tolist) else list(value)
