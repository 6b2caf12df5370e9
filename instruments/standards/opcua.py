"""OPC UA servers (``asyncua``): methods become actions, variables become measurements.

Each configured action may write variables from its parameters, call one method with its
parameters as input arguments, and read variables afterwards; the method's output
arguments and the variables read are the action's measurements. Nodes are named by node id
(``"ns=2;i=7"``, ``"nsu=http://lab/heater;s=Temperature"``) or by a browse path of browse
names (``"2:Heater/2:Temperature"``), taken relative to the ``functional_unit`` prefix.

Following the LADS companion specification (OPC 30500, *Laboratory and Analytical Device
Standard*) where it costs little: an instrument is one *functional unit*, a browse path
prefix under which its methods and variables live; browse names without a namespace index
use the ``namespace`` URI, resolved at connect (LADS servers put their nodes in their
own namespaces, whose indexes are not fixed); and a method's input and output arguments
are discovered from its ``InputArguments`` / ``OutputArguments`` properties, so the options
need only add limits and units. A LADS *program* (``Start`` of a program manager with a
template id) is a method call like any other.

asyncua is asynchronous, so this is a plain :class:`~instruments.driver.Driver`.

OPC UA: IEC 62541; asyncua: https://github.com/FreeOpcUa/opcua-asyncio.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from instruments.driver import ActionSpec, Driver, OutputSpec, ParameterLimit, register_driver
from instruments.standards._common import ActionOptions, ParameterOptions
from models.errors import InstrumentError
from models.records import Measurement

logger = logging.getLogger(__name__)


class VariableOptions(BaseModel):
    """A variable node read (or written) by an action.

    Attributes:
        node: Node id or browse path (relative to the functional unit).
        unit: The measurement's (or parameter's) unit.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str
    unit: str = ""


class MethodCall(BaseModel):
    """A method to call: the object that owns it and the method.

    Attributes:
        object: The owning object's node id or browse path (``""``: the functional unit).
        method: The method's node id or browse name (``"2:SetTemperature"``).
        arguments: Constant input arguments (used by ``safe_state``, which has no
            parameters).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    object: str = ""
    method: str
    arguments: list[float | int | str | bool] = Field(default_factory=list)


class OpcUaAction(ActionOptions):
    """A configured action: writes, then a method call, then reads.

    Attributes:
        call: The method to call with the action's parameters as its input arguments,
            in the method's declared order (matched by argument name).
        parameters: Limits and units of the parameters, by name (a method argument not
            named here is declared with its discovered type and no limits).
        write: Variables set from parameters before the call, by parameter name.
        outputs: Names for the method's output arguments, in order (default: the
            argument names the server declares).
        output_units: Units of the method's outputs, by output name.
        read: Variables read after the call, by measurement name.
    """

    call: MethodCall | None = None
    parameters: dict[str, ParameterOptions] = Field(default_factory=dict)
    write: dict[str, VariableOptions] = Field(default_factory=dict)
    outputs: list[str] | None = None
    output_units: dict[str, str] = Field(default_factory=dict)
    read: dict[str, VariableOptions] = Field(default_factory=dict)


class OpcUaOptions(BaseModel):
    """Options of the ``opcua`` driver (an ``[instruments.options]`` table).

    Attributes:
        url: The server's endpoint, ``"opc.tcp://host:4840/path"``.
        functional_unit: Browse path, under the Objects folder, of the node holding the
            instrument's methods and variables (a LADS functional unit); ``""``: Objects.
        namespace: Namespace URI used for browse names without an ``N:`` index.
        security: asyncua security string (``"Basic256Sha256,SignAndEncrypt,cert.pem,
            key.pem"``); ``""``: no security (loopback or a trusted network only).
        username: User name for user-token authentication (``""``: anonymous).
        password: Its password.
        timeout_s: How long one OPC UA request may take, in seconds.
        actions: The actions, by name.
        safe_state: A method that puts the instrument in its safe state.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^opc\.tcp://")
    functional_unit: str = ""
    namespace: str = ""
    security: str = ""
    username: str = ""
    password: str = ""
    timeout_s: float = Field(default=4.0, gt=0)
    actions: dict[str, OpcUaAction] = Field(min_length=1)
    safe_state: MethodCall | None = None


_NUMBER_TYPES = {"Float", "Double"}
_INTEGER_TYPES = {"SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64"}


def _kind(variant_type: Any) -> str:
    name = getattr(variant_type, "name", "")
    if name in _NUMBER_TYPES:
        return "number"
    if name in _INTEGER_TYPES:
        return "integer"
    return "string"


class _Resolved:
    """What discovery found for one action: nodes and argument types."""

    def __init__(self) -> None:
        self.obj: Any = None
        self.method: Any = None
        self.inputs: list[tuple[str, Any]] = []  # (name, VariantType)
        self.outputs: list[str] = []
        self.write: dict[str, tuple[Any, Any]] = {}  # parameter -> (node, VariantType)
        self.read: dict[str, Any] = {}


@register_driver("opcua")
class OpcUaDriver(Driver):
    """An OPC UA server's methods and variables as actions, configured by browse path.

    Args:
        name: The instrument's name.
        options: An :class:`OpcUaOptions`.
        simulated: Not supported (point ``url`` at a simulation server instead).
    """

    version = "1"
    Options = OpcUaOptions

    def __init__(
        self, name: str, options: BaseModel | None = None, *, simulated: bool = False
    ) -> None:
        super().__init__(name, options, simulated=simulated)
        assert isinstance(self.options, OpcUaOptions)
        self.opts: OpcUaOptions = self.options
        self._client: Any = None
        self._root: Any = None
        self._ns = 0
        self._resolved: dict[str, _Resolved] = {}
        self._specs: list[ActionSpec] = []

    # ------------------------------------------------------------------ discovery

    def _path(self, path: str) -> list[str]:
        parts = [p for p in path.split("/") if p]
        return [p if ":" in p else f"{self._ns}:{p}" for p in parts]

    async def _node(self, ref: str, key: str) -> Any:
        """The node ``ref`` names (node id, or browse path under the functional unit)."""
        from asyncua import ua

        try:
            if ref.startswith(("ns=", "nsu=", "i=", "s=", "g=", "b=")):
                node = self._client.get_node(ref)
                await node.read_browse_name()  # fails if the node does not exist
                return node
            if not ref:
                return self._root
            return await self._root.get_child(self._path(ref))
        except (ua.UaError, ValueError) as exc:
            raise InstrumentError(
                self.name, "no_such_node", f"{key}: {ref!r}: {exc}", field=key
            ) from exc

    async def _arguments(self, method: Any, which: str) -> list[tuple[str, Any]]:
        from asyncua import ua

        try:
            prop = await method.get_child(f"0:{which}")
        except ua.UaError:
            return []
        args = await prop.read_value() or []
        found = []
        for arg in args:
            dtype = arg.DataType
            vtype = (
                ua.VariantType(dtype.Identifier)
                if dtype.NamespaceIndex == 0
                and isinstance(dtype.Identifier, int)
                and dtype.Identifier <= 25
                else ua.VariantType.Variant
            )
            found.append((arg.Name, vtype))
        return found

    async def _resolve(self, name: str, action: OpcUaAction) -> tuple[_Resolved, ActionSpec]:
        key = f"actions.{name}"
        res = _Resolved()
        limits: dict[str, ParameterLimit] = {
            p: lim.limit(p) for p, lim in action.parameters.items()
        }
        for param, var in action.write.items():
            node = await self._node(var.node, f"{key}.write.{param}.node")
            vtype = await node.read_data_type_as_variant_type()
            res.write[param] = (node, vtype)
            if param not in limits:
                limits[param] = ParameterLimit(name=param, type=_kind(vtype), unit=var.unit)
        outputs: list[OutputSpec] = []
        if action.call is not None:
            res.obj = await self._node(action.call.object, f"{key}.call.object")
            ref = action.call.method
            if ref.startswith(("ns=", "nsu=", "i=", "s=")):
                res.method = await self._node(ref, f"{key}.call.method")
            else:
                try:
                    res.method = await res.obj.get_child(self._path(ref))
                except Exception as exc:
                    raise InstrumentError(
                        self.name,
                        "no_such_node",
                        f"{key}.call.method: {ref!r}: {exc}",
                        field=f"{key}.call.method",
                    ) from exc
            res.inputs = await self._arguments(res.method, "InputArguments")
            for arg, vtype in res.inputs:
                if arg not in limits:
                    limits[arg] = ParameterLimit(name=arg, type=_kind(vtype))
            declared = [a for a, _ in await self._arguments(res.method, "OutputArguments")]
            names = action.outputs if action.outputs is not None else declared
            if len(names) != len(declared):
                raise InstrumentError(
                    self.name,
                    "bad_options",
                    f"{key}.outputs: the method has {len(declared)} outputs {declared}",
                    field=f"{key}.outputs",
                )
            res.outputs = names
            outputs += [OutputSpec(name=o, unit=action.output_units.get(o, "")) for o in names]
        for out, var in action.read.items():
            res.read[out] = await self._node(var.node, f"{key}.read.{out}.node")
            outputs.append(OutputSpec(name=out, unit=var.unit))
        unused = set(action.parameters) - {a for a, _ in res.inputs} - set(action.write)
        if unused:
            raise InstrumentError(
                self.name,
                "bad_options",
                f"{key}.parameters: {sorted(unused)} are neither method arguments nor written",
                field=f"{key}.parameters",
            )
        spec = ActionSpec(
            name=name,
            parameters=list(limits.values()),
            outputs=outputs,
            timeout_s=action.timeout_s,
            retry_safe=action.retry_safe,
            description=action.description,
        )
        return res, spec

    async def connect(self) -> None:
        """Connect, resolve every configured node and discover the methods' arguments.

        Raises:
            InstrumentError: ``connect_failed`` (retryable) if the server does not answer;
                ``no_such_node`` / ``bad_options`` naming the options key that is wrong.
        """
        from asyncua import Client

        client = Client(self.opts.url, timeout=self.opts.timeout_s)
        if self.opts.username:
            client.set_user(self.opts.username)
            client.set_password(self.opts.password)
        try:
            if self.opts.security:
                await client.set_security_string(self.opts.security)
            await client.connect()
        except (OSError, TimeoutError) as exc:
            raise InstrumentError(
                self.name, "connect_failed", f"{self.opts.url}: {exc}", retryable=True
            ) from exc
        self._client = client
        try:
            if self.opts.namespace:
                self._ns = await client.get_namespace_index(self.opts.namespace)
            self._root = client.nodes.objects
            if self.opts.functional_unit:
                self._root = await self._node(self.opts.functional_unit, "functional_unit")
            specs = []
            for name, action in self.opts.actions.items():
                self._resolved[name], spec = await self._resolve(name, action)
                specs.append(spec)
            self._specs = specs
        except BaseException:
            await self.close()
            raise
        logger.info("instrument %s: %s, %d actions", self.name, self.opts.url, len(specs))

    def actions(self) -> list[ActionSpec]:
        """The configured actions, with the arguments discovered at :meth:`connect`.

        Raises:
            RuntimeError: Before :meth:`connect`.
        """
        if not self._specs:
            raise RuntimeError(f"instrument {self.name!r}: actions are discovered at connect()")
        return list(self._specs)

    # ------------------------------------------------------------------ running

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Write, call and read as the action is configured.

        Raises:
            InstrumentError: ``unknown_action``; ``opcua_error`` with the server's status
                code when a write, call or read is refused (retryable if the link broke).
        """
        from asyncua import ua

        res = self._resolved.get(action)
        if res is None:
            raise InstrumentError(self.name, "unknown_action", f"no action {action!r}")
        spec = self.opts.actions[action]
        out: list[Measurement] = []
        try:
            for param, (node, vtype) in res.write.items():
                if param in parameters:
                    await node.write_value(ua.DataValue(ua.Variant(parameters[param], vtype)))
            if res.method is not None:
                args = [
                    ua.Variant(parameters[a], vtype) for a, vtype in res.inputs if a in parameters
                ]
                result = await res.obj.call_method(res.method, *args)
                values = [] if result is None else result if len(res.outputs) > 1 else [result]
                for name, value in zip(res.outputs, values, strict=True):
                    out.append(self._measurement(name, value, spec.output_units.get(name, "")))
            for name, node in res.read.items():
                out.append(self._measurement(name, await node.read_value(), spec.read[name].unit))
        except ua.UaStatusCodeError as exc:
            raise InstrumentError(self.name, "opcua_error", str(exc)) from exc
        except (OSError, TimeoutError, ConnectionError) as exc:
            raise InstrumentError(self.name, "opcua_link", str(exc), retryable=True) from exc
        return out

    def _measurement(self, name: str, value: Any, unit: str) -> Measurement:
        if isinstance(value, bool) or not isinstance(value, (int, float, list)):
            raise InstrumentError(self.name, "bad_answer", f"{name}: {value!r} is not a number")
        if isinstance(value, list):
            return Measurement(name=name, array=[float(v) for v in value], unit=unit)
        if not math.isfinite(float(value)):
            raise InstrumentError(self.name, "bad_answer", f"{name}: {value!r}")
        return Measurement(name=name, value=float(value), unit=unit)

    async def safe_state(self) -> str:
        """Call the configured safe-state method with its constant arguments."""
        call = self.opts.safe_state
        if call is None:
            return "no safe state declared"
        if self._client is None:
            return "not connected: nothing called"
        obj = await self._node(call.object, "safe_state.object")
        method = (
            await self._node(call.method, "safe_state.method")
            if call.method.startswith(("ns=", "nsu=", "i=", "s="))
            else await obj.get_child(self._path(call.method))
        )
        await obj.call_method(method, *call.arguments)
        return f"called {call.method}({', '.join(map(repr, call.arguments))})"

    async def close(self) -> None:
        """Disconnect."""
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.disconnect()
            except Exception:  # the link may already be gone
                logger.info("instrument %s: disconnect failed", self.name, exc_info=True)
