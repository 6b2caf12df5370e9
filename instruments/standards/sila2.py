"""SiLA 2 servers (``sila2``): discovered features become actions.

At connect the driver opens a :class:`sila2.client.SilaClient` on the configured address
(insecure, or TLS with the server's CA) and reads every feature the server implements.
Each unobservable command and each property read becomes an action named
``Feature.Identifier``; each observable command becomes a long-running action whose
progress and estimated remaining time (what SiLA's execution info gives) are kept in
:attr:`Sila2Driver.progress` and logged, and whose cancellation is sent to the server when
it implements SiLA's ``CancelController`` feature.

Parameters map to the action's declared limits: a ``Real`` is a number, an ``Integer`` an
integer, a ``String`` a string, a ``Boolean`` an integer 0/1; SiLA constraints declared by
the feature (``MinimalInclusive``/``MaximalInclusive``, the exclusive ones as the same
bounds, ``Set``, ``Unit``) become the limits, choices and unit, and the options add limits
where the feature declares none. Numeric responses (and lists of numbers) are the outputs.
Commands with parameters of other types (structures, binaries, dates, custom data types)
are left out, with a log line.

The sila2 client blocks, so this is a :class:`~instruments.driver.BlockingDriver`; an
observable command is polled from the event loop, so the worker thread stays free.

SiLA 2: https://sila-standard.com, Part A/B (2022); ``sila2``: https://gitlab.com/SiLA2/sila_python.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from instruments.driver import (
    ActionSpec,
    BlockingDriver,
    OutputSpec,
    ParameterLimit,
    register_driver,
)
from instruments.standards._common import ParameterOptions
from models.errors import InstrumentError
from models.records import Measurement

_R = TypeVar("_R")

logger = logging.getLogger(__name__)

CANCEL_FEATURE = "CancelController"


class Sila2Options(BaseModel):
    """Options of the ``sila2`` driver (an ``[instruments.options]`` table).

    Attributes:
        host: The SiLA server's host name or address.
        port: Its port.
        insecure: Plaintext gRPC (only on loopback or a trusted network).
        root_certs: PEM file of the CA that signed the server's certificate (TLS).
        client_key: PEM file of the client's private key (mutual TLS), with
            ``client_cert``.
        client_cert: PEM file of the client's certificate chain.
        features: Feature identifiers to expose (default: all but ``SiLAService`` and
            ``CancelController``).
        parameters: Limits to add, by action then parameter name (used where the feature
            declares no constraint; a feature's constraint always wins).
        timeouts_s: Action timeouts in seconds, by action name (default ``timeout_s``).
        timeout_s: Default action timeout, in seconds.
        retry_safe: Actions safe to run again after a crash (property reads always are).
        poll_s: How often a running observable command's state is read, in seconds.
        safe_commands: Unobservable commands without parameters that ``safe_state`` calls
            after cancelling running commands (``["HeaterController.SwitchOff"]``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    insecure: bool = False
    root_certs: Path | None = None
    client_key: Path | None = None
    client_cert: Path | None = None
    features: list[str] | None = None
    parameters: dict[str, dict[str, ParameterOptions]] = Field(default_factory=dict)
    timeouts_s: dict[str, float] = Field(default_factory=dict)
    timeout_s: float = Field(default=600.0, gt=0)
    retry_safe: list[str] = Field(default_factory=list)
    poll_s: float = Field(default=0.05, gt=0)
    safe_commands: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _tls_or_insecure(self) -> Sila2Options:
        if self.insecure and (self.root_certs or self.client_key or self.client_cert):
            raise ValueError("insecure: certificates are for TLS links only")
        if (self.client_key is None) != (self.client_cert is None):
            raise ValueError("client_key and client_cert go together")
        return self


@dataclass
class Progress:
    """What SiLA's execution info said last about a running observable command."""

    action: str
    execution_uuid: str
    status: str
    progress: float | None
    remaining_s: float | None


@dataclass
class _Action:
    spec: ActionSpec
    kind: str  # "command", "observable" or "property"
    target: Any  # the sila2 client command or property
    booleans: frozenset[str]


def _describe_type(data_type: Any) -> tuple[str, dict[str, Any]] | None:
    """``(limit type, limit fields)`` of a SiLA data type, or ``None`` if unsupported."""
    from sila2.framework.constraints.maximal_exclusive import MaximalExclusive
    from sila2.framework.constraints.maximal_inclusive import MaximalInclusive
    from sila2.framework.constraints.minimal_exclusive import MinimalExclusive
    from sila2.framework.constraints.minimal_inclusive import MinimalInclusive
    from sila2.framework.constraints.set import Set
    from sila2.framework.constraints.unit import Unit
    from sila2.framework.data_types.boolean import Boolean
    from sila2.framework.data_types.constrained import Constrained
    from sila2.framework.data_types.integer import Integer
    from sila2.framework.data_types.real import Real
    from sila2.framework.data_types.string import String

    fields: dict[str, Any] = {}
    if isinstance(data_type, Constrained):
        for c in data_type.constraints:
            if isinstance(c, (MinimalInclusive, MinimalExclusive)):
                fields["minimum"] = float(c.value_from_xml)
            elif isinstance(c, (MaximalInclusive, MaximalExclusive)):
                fields["maximum"] = float(c.value_from_xml)
            elif isinstance(c, Set):
                fields["choices"] = [v.reference_value for v in c.set_values]
            elif isinstance(c, Unit):
                fields["unit"] = c.label
        data_type = data_type.base_type
    if isinstance(data_type, Real):
        return "number", fields
    if isinstance(data_type, Integer):
        return "integer", fields
    if isinstance(data_type, String):
        return "string", fields
    if isinstance(data_type, Boolean):
        return "integer", {"choices": [0, 1]}
    return None


def _output(field: Any) -> OutputSpec | None:
    from sila2.framework.data_types.list import List

    if isinstance(field.data_type, List):
        inner = _describe_type(field.data_type.element_type)
        if inner is None or inner[0] == "string":
            return None
        return OutputSpec(name=field._identifier, kind="array", unit=inner[1].get("unit", ""))
    described = _describe_type(field.data_type)
    if described is None or described[0] == "string":
        return None
    return OutputSpec(name=field._identifier, unit=described[1].get("unit", ""))


@register_driver("sila2")
class Sila2Driver(BlockingDriver):
    """A SiLA 2 server's commands and properties, discovered at connect, as actions.

    Args:
        name: The instrument's name.
        options: A :class:`Sila2Options`.
        simulated: Not supported (point the options at a simulation server instead).
    """

    version = "1"
    Options = Sila2Options

    def __init__(
        self, name: str, options: BaseModel | None = None, *, simulated: bool = False
    ) -> None:
        super().__init__(name, options, simulated=simulated)
        assert isinstance(self.options, Sila2Options)
        self.opts: Sila2Options = self.options
        self._client: Any = None
        self._actions: dict[str, _Action] = {}
        self._running: dict[str, Any] = {}  # execution uuid -> client instance
        self.progress: Progress | None = None
        """The last execution info of the running (or last) observable command."""

    # ------------------------------------------------------------------ discovery

    def connect_blocking(self) -> None:
        """Connect and turn the server's features into actions.

        Raises:
            InstrumentError: ``connect_failed`` (retryable) if the server does not answer;
                ``bad_options`` if a configured feature, action or parameter is unknown.
        """
        from sila2.client import SilaClient

        def read(path: Path | None) -> bytes | None:
            return None if path is None else path.read_bytes()

        try:
            self._client = SilaClient(
                self.opts.host,
                self.opts.port,
                insecure=self.opts.insecure,
                root_certs=read(self.opts.root_certs),
                private_key=read(self.opts.client_key),
                cert_chain=read(self.opts.client_cert),
            )
        except Exception as exc:  # grpc raises its own errors; sila2 wraps some
            raise InstrumentError(
                self.name,
                "connect_failed",
                f"{self.opts.host}:{self.opts.port}: {type(exc).__name__}: {exc}",
                retryable=True,
            ) from exc
        features = self._client._features
        wanted = self.opts.features
        if wanted is None:
            wanted = [f for f in features if f not in ("SiLAService", CANCEL_FEATURE)]
        for f in wanted:
            if f not in features:
                self._bad("features", f"the server has no feature {f!r} (it has {list(features)})")
        for f in wanted:
            self._discover(f, features[f])
        for key in (*self.opts.parameters, *self.opts.timeouts_s, *self.opts.retry_safe):
            if key not in self._actions:
                self._bad("parameters", f"no action {key!r} (actions: {sorted(self._actions)})")
        for key, limits in self.opts.parameters.items():
            known = {p.name for p in self._actions[key].spec.parameters}
            for p in limits:
                if p not in known:
                    self._bad(f"parameters.{key}.{p}", f"action {key!r} has no such parameter")
        for key in self.opts.safe_commands:
            a = self._actions.get(key)
            if a is None or a.kind != "command" or a.spec.parameters:
                self._bad("safe_commands", f"{key!r} is no unobservable command without parameters")
        logger.info(
            "instrument %s: SiLA server %s:%d, actions %s",
            self.name,
            self.opts.host,
            self.opts.port,
            sorted(self._actions),
        )

    def _bad(self, key: str, message: str) -> None:
        raise InstrumentError(self.name, "bad_options", f"{key}: {message}", field=key)

    def _discover(self, fid: str, feature: Any) -> None:
        groups = [
            ("command", feature._unobservable_commands),
            ("observable", feature._observable_commands),
        ]
        for kind, commands in groups:
            for cid, cmd in commands.items():
                action = f"{fid}.{cid}"
                params, booleans = self._parameters(action, cmd.parameters.fields)
                if params is None:
                    continue
                outputs = [o for o in map(_output, cmd.responses.fields) if o is not None]
                self._add(
                    action,
                    kind,
                    feature._client_commands[cid],
                    params,
                    outputs,
                    booleans,
                    cmd._description,
                )
        props = {**feature._unobservable_properties, **feature._observable_properties}
        for pid, prop in props.items():
            out = _output(prop)
            if out is None:
                logger.info("instrument %s: property %s.%s is not numeric", self.name, fid, pid)
                continue
            self._add(
                f"{fid}.{pid}",
                "property",
                feature._client_properties[pid],
                [],
                [out],
                frozenset(),
                prop._description,
            )

    def _parameters(
        self, action: str, fields: list[Any]
    ) -> tuple[list[ParameterLimit] | None, frozenset[str]]:
        from sila2.framework.data_types.boolean import Boolean

        extra = self.opts.parameters.get(action, {})
        limits = []
        booleans = set()
        for field in fields:
            pid = field._identifier
            described = _describe_type(field.data_type)
            if described is None:
                logger.warning(
                    "instrument %s: %s left out: parameter %s has an unsupported type",
                    self.name,
                    action,
                    pid,
                )
                return None, frozenset()
            kind, declared = described
            if isinstance(field.data_type, Boolean):
                booleans.add(pid)
            merged = extra[pid].model_dump(exclude_unset=True) if pid in extra else {}
            merged.update(declared)  # the feature's constraints win over the options
            merged["type"] = kind
            limits.append(ParameterLimit(name=pid, **merged))
        return limits, frozenset(booleans)

    def _add(
        self,
        action: str,
        kind: str,
        target: Any,
        params: list[ParameterLimit],
        outputs: list[OutputSpec],
        booleans: frozenset[str],
        description: str,
    ) -> None:
        spec = ActionSpec(
            name=action,
            parameters=params,
            outputs=outputs,
            timeout_s=self.opts.timeouts_s.get(action, self.opts.timeout_s),
            retry_safe=kind == "property" or action in self.opts.retry_safe,
            description=" ".join(description.split()),
        )
        self._actions[action] = _Action(spec, kind, target, booleans)

    def actions(self) -> list[ActionSpec]:
        """The discovered actions.

        Raises:
            RuntimeError: Before :meth:`connect`.
        """
        if not self._actions:
            raise RuntimeError(f"instrument {self.name!r}: actions are discovered at connect()")
        return [a.spec for a in self._actions.values()]

    # ------------------------------------------------------------------ running

    def _args(self, action: _Action, parameters: Mapping[str, Any]) -> dict[str, Any]:
        return {k: bool(v) if k in action.booleans else v for k, v in parameters.items()}

    def _measurements(self, action: _Action, responses: Any) -> list[Measurement]:
        values = responses._asdict() if hasattr(responses, "_asdict") else {}
        if action.kind == "property":
            values = {action.spec.outputs[0].name: responses}
        out = []
        for o in action.spec.outputs:
            value = values[o.name]
            if o.kind == "array":
                out.append(Measurement(name=o.name, array=[float(v) for v in value], unit=o.unit))
                continue
            number = float(value)
            if not math.isfinite(number):
                raise InstrumentError(self.name, "bad_answer", f"{o.name}: {value!r}")
            out.append(Measurement(name=o.name, value=number, unit=o.unit))
        return out

    def _sila_error(self, exc: Exception) -> InstrumentError:
        from sila2.framework import SilaConnectionError, ValidationError

        if isinstance(exc, ValidationError):
            field = getattr(exc, "parameter_fully_qualified_identifier", None)
            name = str(field).rsplit("/", 1)[-1] if field else None
            return InstrumentError(self.name, "parameter_rejected", str(exc), field=name)
        if isinstance(exc, SilaConnectionError):
            return InstrumentError(self.name, "sila_link", str(exc), retryable=True)
        return InstrumentError(self.name, "sila_error", f"{type(exc).__name__}: {exc}")

    def _action(self, action: str) -> _Action:
        found = self._actions.get(action)
        if found is None:
            raise InstrumentError(self.name, "unknown_action", f"no action {action!r}")
        return found

    def run_blocking(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Call an unobservable command or read a property (in the worker thread)."""
        a = self._action(action)
        try:
            if a.kind == "property":
                return self._measurements(a, a.target.get())
            return self._measurements(a, a.target(**self._args(a, parameters)))
        except InstrumentError:
            raise
        except Exception as exc:
            raise self._sila_error(exc) from exc

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Run ``action``; an observable command is started, then polled until it ends.

        Cancelling the run cancels the command on the server (``CancelController``) before
        the cancellation is passed on.

        Raises:
            InstrumentError: ``unknown_action``; ``parameter_rejected`` (with the field) when
                the server's validation refuses a value; ``sila_error`` when the command
                fails (its message); ``sila_link`` (retryable) when the link broke.
        """
        a = self._action(action)
        if a.kind != "observable":
            return await super().run(action, parameters)
        try:
            instance = await self._in_thread(a.target, **self._args(a, parameters))
        except Exception as exc:
            raise self._sila_error(exc) from exc
        uuid = str(instance.execution_uuid)
        self._running[uuid] = instance
        try:
            while not instance.done:
                self._note_progress(action, instance)
                await asyncio.sleep(self.opts.poll_s)
            self._note_progress(action, instance)
            try:
                responses = await self._in_thread(instance.get_responses)
            except Exception as exc:
                raise self._sila_error(exc) from exc
            return self._measurements(a, responses)
        except asyncio.CancelledError:
            await self._cancel([uuid])
            raise
        finally:
            self._running.pop(uuid, None)
            with contextlib.suppress(Exception):
                instance.cancel_execution_info_subscription()

    async def _in_thread(self, fn: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
        if kwargs:
            return await super()._in_thread(lambda: fn(*args, **kwargs))
        return await super()._in_thread(fn, *args)

    def _note_progress(self, action: str, instance: Any) -> None:
        remaining = instance.estimated_remaining_time
        status = getattr(instance.status, "name", str(instance.status))
        progress = Progress(
            action,
            str(instance.execution_uuid),
            status,
            instance.progress,
            None if remaining is None else remaining.total_seconds(),
        )
        if progress != self.progress:
            logger.info(
                "instrument %s: %s %s progress %s, %s s left",
                self.name,
                action,
                status,
                progress.progress,
                progress.remaining_s,
            )
        self.progress = progress

    async def _cancel(self, uuids: list[str]) -> str:
        """Ask the server to cancel these executions; say what was done."""
        features = {} if self._client is None else self._client._features
        if CANCEL_FEATURE not in features:
            if uuids:
                logger.warning(
                    "instrument %s: the server has no %s; commands %s go on running there",
                    self.name,
                    CANCEL_FEATURE,
                    uuids,
                )
            return f"{len(uuids)} running commands left running (no {CANCEL_FEATURE})"
        cancel = features[CANCEL_FEATURE]
        done = 0
        for uuid in uuids:
            try:
                await asyncio.to_thread(cancel.CancelCommand, CommandExecutionUUID=uuid)
                done += 1
            except Exception:
                logger.warning("instrument %s: cancel %s failed", self.name, uuid, exc_info=True)
        return f"cancelled {done} running commands"

    async def safe_state(self) -> str:
        """Cancel every running observable command, then call the ``safe_commands``."""
        said = [await self._cancel(list(self._running))]
        for key in self.opts.safe_commands:
            await asyncio.to_thread(self._actions[key].target)
            said.append(f"called {key}")
        return "; ".join(said)

    def close_blocking(self) -> None:
        """Close the SiLA client."""
        if self._client is not None:
            self._client.close()
            self._client = None
