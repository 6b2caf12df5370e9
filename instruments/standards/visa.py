"""SCPI instruments over VISA (``pyvisa``): an action is a sequence of writes and queries.

Each configured action lists SCPI steps. A ``write`` step sends a command; a ``query`` step
sends one and parses the answer into a measurement (a float, an integer, a regex group or a
comma-separated list). ``{name}`` placeholders in a command are formatted with the action's
validated parameters, so ``"SOUR:VOLT {voltage_v:.3f}"`` sends the value the safety gate
let through. An optional error query (``SYST:ERR?``) after each action turns an instrument
error into a failed step instead of a silently wrong result.

The driver talks to real hardware through a VISA backend (``@py`` for pyvisa-py, ``@ivi``
for a vendor VISA) and carries a simulated backend: with ``simulated=True`` it opens the
same resource on ``pyvisa-sim`` with the device definition named by ``sim_definition``,
so a dry run sends the very same SCPI.

pyvisa's calls block, so this is a :class:`~instruments.driver.BlockingDriver`: each call
runs in the driver's worker thread and the server keeps answering heartbeats.

SCPI: IVI Foundation, *Standard Commands for Programmable Instruments* (1999);
VISA: IVI-4.3 / VPP-4.3.
"""

from __future__ import annotations

import logging
import math
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from instruments.driver import ActionSpec, BlockingDriver, OutputSpec, register_driver
from instruments.standards._common import ActionOptions, ParameterOptions
from models.errors import InstrumentError
from models.records import Measurement

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[\r\n;]")
"""Characters a string parameter may not carry into a SCPI command (they end or chain it)."""


class ScpiStep(BaseModel):
    """One SCPI step of an action: a ``write`` or a ``query`` whose answer is parsed.

    Attributes:
        write: A command to send, with ``{parameter}`` placeholders (Python format syntax).
        query: A query to send; its answer becomes the measurement ``output``.
        output: The measurement's name (required for a query).
        parse: How the answer is read: ``"float"``, ``"int"``, ``"regex"`` (group
            ``group`` of ``regex``, as a float) or ``"list"`` (comma-separated floats, an
            array output).
        regex: The pattern for ``parse = "regex"`` (searched in the answer).
        group: The regex group holding the number (index or name).
        unit: The measurement's unit.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    write: str | None = None
    query: str | None = None
    output: str | None = None
    parse: Literal["float", "int", "regex", "list"] = "float"
    regex: str | None = None
    group: int | str = 1
    unit: str = ""

    @model_validator(mode="after")
    def _one_kind(self) -> ScpiStep:
        if (self.write is None) == (self.query is None):
            raise ValueError("a step has exactly one of write and query")
        if self.query is not None and not self.output:
            raise ValueError("a query step names its output")
        if self.parse == "regex":
            if self.regex is None:
                raise ValueError("parse = 'regex' needs regex")
            re.compile(self.regex)
        return self

    @property
    def command(self) -> str:
        """The command text (write or query)."""
        text = self.write if self.write is not None else self.query
        assert text is not None
        return text


class ScpiAction(ActionOptions):
    """A configured action: its parameters and its SCPI steps, run in order.

    Attributes:
        parameters: The accepted parameters with their limits, by name.
        steps: The writes and queries.
    """

    parameters: dict[str, ParameterOptions] = Field(default_factory=dict)
    steps: list[ScpiStep] = Field(min_length=1)

    @model_validator(mode="after")
    def _placeholders_name_parameters(self) -> ScpiAction:
        for i, step in enumerate(self.steps):
            for _, field, _, _ in string.Formatter().parse(step.command):
                if field is None:
                    continue
                if field.split(".")[0].split("[")[0] not in self.parameters:
                    raise ValueError(f"steps[{i}]: placeholder {{{field}}} names no parameter")
        outputs = [s.output for s in self.steps if s.query is not None]
        if len(outputs) != len(set(outputs)):
            raise ValueError("two query steps have the same output")
        return self


class VisaOptions(BaseModel):
    """Options of the ``visa`` driver (an ``[instruments.options]`` table).

    Attributes:
        resource: The VISA resource name, e.g. ``"TCPIP::192.168.1.20::INSTR"`` or
            ``"ASRL/dev/ttyUSB0::INSTR"``.
        backend: The pyvisa backend: ``"@py"`` (pyvisa-py), ``"@ivi"`` (a vendor VISA
            library) or ``"@sim"`` (pyvisa-sim, with ``sim_definition``).
        sim_definition: The pyvisa-sim device definition (YAML file) used with
            ``backend = "@sim"`` or when the instrument runs simulated.
        read_termination: What ends an answer.
        write_termination: What ends a command.
        timeout_ms: How long one VISA read or write may take, in milliseconds.
        identify_query: Queried at connect to check the link (logged); ``""``: none.
        error_query: Queried after each action (``"SYST:ERR?"``); an answer that does not
            start with ``0`` / ``+0`` fails the step with the instrument's message.
            ``""``: none.
        actions: The actions, by name.
        safe_state: Writes (or queries) that put the instrument in its safe state
            (``OUTP OFF``); parameters are not available there.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    resource: str
    backend: str = "@py"
    sim_definition: Path | None = None
    read_termination: str = "\n"
    write_termination: str = "\n"
    timeout_ms: int = Field(default=5000, gt=0)
    identify_query: str = "*IDN?"
    error_query: str = ""
    actions: dict[str, ScpiAction] = Field(min_length=1)
    safe_state: list[ScpiStep] = Field(default_factory=list)

    @model_validator(mode="after")
    def _sim_needs_definition(self) -> VisaOptions:
        if self.backend == "@sim" and self.sim_definition is None:
            raise ValueError("backend '@sim' needs sim_definition")
        for i, step in enumerate(self.safe_state):
            if any(field is not None for _, field, _, _ in string.Formatter().parse(step.command)):
                raise ValueError(f"safe_state[{i}]: a safe-state step takes no placeholders")
        return self


def parse_answer(step: ScpiStep, answer: str, instrument: str) -> Measurement:
    """The measurement a query step's ``answer`` holds.

    Raises:
        InstrumentError: ``bad_answer`` if the answer does not parse as the step says.
    """
    name = step.output
    assert name is not None
    text = answer.strip()
    try:
        if step.parse == "list":
            values = [float(v) for v in text.split(",") if v.strip()]
            return Measurement(name=name, array=values, unit=step.unit)
        if step.parse == "regex":
            assert step.regex is not None
            match = re.search(step.regex, text)
            if match is None:
                raise ValueError(f"no match for {step.regex!r}")
            value = float(match.group(step.group))
        elif step.parse == "int":
            value = float(int(text))
        else:
            value = float(text)
    except (ValueError, IndexError) as exc:
        raise InstrumentError(
            instrument, "bad_answer", f"{step.query!r} answered {answer!r}: {exc}", retryable=True
        ) from exc
    if not math.isfinite(value):
        raise InstrumentError(instrument, "bad_answer", f"{step.query!r} answered {answer!r}")
    return Measurement(name=name, value=value, unit=step.unit)


@register_driver("visa")
class VisaDriver(BlockingDriver):
    """A SCPI instrument over VISA, its actions configured as SCPI sequences.

    Args:
        name: The instrument's name.
        options: A :class:`VisaOptions`.
        simulated: Open the resource on pyvisa-sim with ``options.sim_definition``.
    """

    version = "1"
    Options = VisaOptions
    supports_simulation = True

    def __init__(
        self, name: str, options: BaseModel | None = None, *, simulated: bool = False
    ) -> None:
        super().__init__(name, options, simulated=simulated)
        assert isinstance(self.options, VisaOptions)
        self.opts: VisaOptions = self.options
        if simulated and self.opts.sim_definition is None:
            raise ValueError(f"instrument {name!r}: simulated needs options.sim_definition")
        self._rm: Any = None
        self._inst: Any = None
        self.identity = ""
        """The answer to the identify query at connect."""

    def _backend(self) -> str:
        if self.simulated or self.opts.backend == "@sim":
            return f"{self.opts.sim_definition}@sim"
        return self.opts.backend

    def actions(self) -> list[ActionSpec]:
        """One action per configured SCPI sequence; each query step is an output."""
        return [
            ActionSpec(
                name=name,
                parameters=[p.limit(k) for k, p in a.parameters.items()],
                outputs=[
                    OutputSpec(
                        name=s.output or "",
                        kind="array" if s.parse == "list" else "scalar",
                        unit=s.unit,
                    )
                    for s in a.steps
                    if s.query is not None
                ],
                timeout_s=a.timeout_s,
                retry_safe=a.retry_safe,
                description=a.description or "; ".join(s.command for s in a.steps),
            )
            for name, a in self.opts.actions.items()
        ]

    def connect_blocking(self) -> None:
        """Open the resource and send the identify query."""
        import pyvisa

        try:
            self._rm = pyvisa.ResourceManager(self._backend())
            self._inst = self._rm.open_resource(
                self.opts.resource,
                read_termination=self.opts.read_termination,
                write_termination=self.opts.write_termination,
                timeout=self.opts.timeout_ms,
            )
            if self.opts.identify_query:
                self.identity = str(self._inst.query(self.opts.identify_query)).strip()
        except (pyvisa.Error, OSError, ValueError) as exc:
            raise InstrumentError(
                self.name, "connect_failed", f"{self.opts.resource}: {exc}", retryable=True
            ) from exc
        logger.info("instrument %s: %s is %r", self.name, self.opts.resource, self.identity)

    def _step(self, step: ScpiStep, parameters: Mapping[str, Any]) -> Measurement | None:
        for key, value in parameters.items():
            if isinstance(value, str) and _UNSAFE.search(value):
                raise InstrumentError(
                    self.name,
                    "bad_parameter",
                    f"{key}: a newline or ';' cannot go into SCPI",
                    field=key,
                )
        command = step.command.format(**parameters)
        if step.write is not None:
            self._inst.write(command)
            return None
        return parse_answer(step, str(self._inst.query(command)), self.name)

    def _check_errors(self) -> None:
        if not self.opts.error_query:
            return
        answer = str(self._inst.query(self.opts.error_query)).strip()
        if not re.match(r"^[+]?0\b", answer):
            raise InstrumentError(self.name, "instrument_error", answer)

    def run_blocking(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Send the action's steps in order and parse each query's answer.

        Raises:
            InstrumentError: ``unknown_action``; ``bad_answer`` for an answer that does not
                parse; ``instrument_error`` for an error the error query reported;
                ``visa_io`` (retryable) for a VISA failure such as a timeout.
        """
        import pyvisa

        spec = self.opts.actions.get(action)
        if spec is None:
            raise InstrumentError(self.name, "unknown_action", f"no action {action!r}")
        if self._inst is None:
            raise InstrumentError(self.name, "not_connected", "connect() was not called")
        results: list[Measurement] = []
        try:
            for step in spec.steps:
                if self.cancel_requested:
                    raise InstrumentError(self.name, "cancelled", "cancelled between steps")
                m = self._step(step, parameters)
                if m is not None:
                    results.append(m)
            self._check_errors()
        except pyvisa.Error as exc:
            raise InstrumentError(self.name, "visa_io", str(exc), retryable=True) from exc
        return results

    def safe_state_blocking(self) -> str:
        """Send the configured safe-state steps."""
        if not self.opts.safe_state:
            return "no safe state declared"
        if self._inst is None:
            return "not connected: nothing sent"
        for step in self.opts.safe_state:
            self._step(step, {})
        return "sent " + "; ".join(s.command for s in self.opts.safe_state)

    def close_blocking(self) -> None:
        """Close the resource and the resource manager."""
        if self._inst is not None:
            self._inst.close()
            self._inst = None
        if self._rm is not None:
            self._rm.close()
            self._rm = None
