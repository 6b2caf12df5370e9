"""People as instruments: the ``manual`` driver turns an action into a task for an operator.

Most self-driving labs have a person somewhere in the loop (moving a sample between two
machines, weighing by hand, a visual check). A ``manual`` instrument is an instrument like
any other to the controller, which only speaks the protocol: it is served by a normal
:class:`~instruments.server.InstrumentServer`, declares its actions (parameters with
limits, outputs with limits, a timeout), and answers ``submit`` and ``status``. Its driver,
:class:`ManualDriver`, writes each request as a task in the store's ``tasks`` table
(:mod:`controller.store.tasks`) with the action's instructions and the parameter values;
the operator sees it in the dashboard (``/tasks``) or with ``sdlab tasks list``, claims it,
does it, and enters the outputs (checked against their declared types and limits) or marks
it failed with a reason. The driver polls the store (off the event loop) until then.

Deadlines, alarms and recovery are the controller's, as for any instrument: the action's
``timeout_s`` is the deadline (the controller cancels the request when it passes, and the
task is cancelled); a failed task fails the step (code ``task_failed``); a restarted
server finds the task by request id and keeps waiting, so nothing is lost.

The driver's options (``[instruments.options]`` once hosted by a gateway)::

    db = "sqlite:////srv/lab/sdlab.db"        # the store the dashboard reads
    poll_s = 0.5
    [[actions]]
    name = "weigh"
    instructions = "Weigh the crucible of sample {sample} on the bench balance."
    timeout_s = 1800
    parameters = [{name = "sample", type = "integer", minimum = 0}]
    outputs = [{name = "mass_g", unit = "g", minimum = 0, maximum = 200}]

``instructions`` may name parameters in braces; they are filled in for the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from controller.store import make_engine, migrate, session_factory, transaction
from controller.store.tasks import cancel_task, list_tasks, open_task, task_by_request
from instruments.driver import (
    ActionSpec,
    Driver,
    OutputSpec,
    ParameterLimit,
    current_request_id,
    register_driver,
)
from models.errors import InstrumentError
from models.records import Measurement
from models.status import TaskStatus

logger = logging.getLogger(__name__)

__all__ = ["ManualAction", "ManualDriver", "ManualOptions", "ManualOutput"]

TASK_FAILED = "task_failed"
"""Error code of a step whose task the operator marked failed."""


class ManualOutput(BaseModel):
    """One value the operator enters.

    Attributes:
        name: Output name (a measurement of the step).
        type: ``"number"`` or ``"integer"``.
        minimum: Smallest accepted value, inclusive.
        maximum: Largest accepted value, inclusive.
        unit: Unit, shown beside the field.
        description: Help shown beside the field.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    type: Literal["number", "integer"] = "number"
    minimum: float | None = Field(default=None, allow_inf_nan=False)
    maximum: float | None = Field(default=None, allow_inf_nan=False)
    unit: str = ""
    description: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> ManualOutput:
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum} is above maximum {self.maximum}")
        return self


class ManualAction(BaseModel):
    """An action a person performs.

    Attributes:
        name: Action name.
        instructions: What to do; ``{parameter}`` placeholders are filled in.
        parameters: What the controller sends, with limits (checked by the server).
        outputs: What the operator enters.
        timeout_s: The deadline, seconds after the task opens.
        retry_safe: Whether doing it again is safe.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    instructions: str = Field(min_length=1)
    parameters: list[ParameterLimit] = Field(default_factory=list)
    outputs: list[ManualOutput] = Field(min_length=1)
    timeout_s: float = Field(default=3600.0, gt=0, allow_inf_nan=False)
    retry_safe: bool = False


class ManualOptions(BaseModel):
    """The ``manual`` driver's options.

    Attributes:
        db: SQLAlchemy URL of the store whose ``tasks`` table the dashboard reads.
        poll_s: How often the driver looks for the operator's answer, in seconds.
        actions: The actions offered.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    db: str = Field(min_length=1)
    poll_s: float = Field(default=0.5, gt=0, le=60, allow_inf_nan=False)
    actions: list[ManualAction] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> ManualOptions:
        names = [a.name for a in self.actions]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"actions: {dup} declared more than once")
        return self


def _output_json(o: ManualOutput) -> dict[str, Any]:
    return o.model_dump(mode="json")


def _instructions(action: ManualAction, parameters: Mapping[str, Any]) -> str:
    try:
        return action.instructions.format_map(dict(parameters))
    except (KeyError, IndexError, ValueError):  # a placeholder it was not sent: as written
        return action.instructions


@register_driver("manual")
class ManualDriver(Driver):
    """A person, as an instrument (module docstring).

    Args:
        name: The instrument's name.
        options: Its :class:`ManualOptions` (required).
        simulated: Unused (a person has no simulated backend); accepted for the gateway.

    Raises:
        ValueError: If ``options`` is missing.
    """

    Options: ClassVar[type[BaseModel]] = ManualOptions
    options: ManualOptions
    version = "1"

    def __init__(
        self, name: str, options: BaseModel | None = None, *, simulated: bool = False
    ) -> None:
        if options is None:
            raise ValueError("options: the manual driver needs db and actions")
        super().__init__(name, options, simulated=simulated)
        self._actions = {a.name: a for a in self.options.actions}
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    def actions(self) -> list[ActionSpec]:
        """The declared actions; each output is a scalar measurement."""
        return [
            ActionSpec(
                name=a.name,
                parameters=list(a.parameters),
                outputs=[OutputSpec(name=o.name, unit=o.unit) for o in a.outputs],
                timeout_s=a.timeout_s,
                retry_safe=a.retry_safe,
                description=a.instructions,
            )
            for a in self.options.actions
        ]

    def _store(self) -> sessionmaker[Session]:
        if self._sessions is None:
            self._engine = make_engine(self.options.db)
            migrate(self._engine)
            self._sessions = session_factory(self._engine)
        return self._sessions

    async def connect(self) -> None:
        """Open the store (and bring its schema up to date)."""
        await asyncio.to_thread(self._store)

    def _open(self, request_id: str, action: ManualAction, parameters: dict[str, Any]) -> int:
        with transaction(self._store()) as s:
            row = open_task(
                s,
                request_id,
                instrument=self.name,
                action=action.name,
                instructions=_instructions(action, parameters),
                parameters=parameters,
                outputs=[_output_json(o) for o in action.outputs],
                timeout_s=action.timeout_s,
            )
            return row.id

    def _read(self, request_id: str) -> tuple[TaskStatus, dict[str, Any] | None, str | None]:
        with transaction(self._store()) as s:
            row = task_by_request(s, request_id)
            if row is None:
                raise InstrumentError(self.name, "task_lost", f"task of {request_id} is gone")
            return TaskStatus(row.status), row.values, row.reason

    def _cancel(self, request_id: str, reason: str) -> None:
        with transaction(self._store()) as s:
            cancel_task(s, request_id, f"instrument:{self.name}", reason)

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        """Open (or find again) the request's task and wait until the operator finishes it.

        The task's key is the request id the server runs
        (:func:`~instruments.driver.current_request_id`).

        Raises:
            InstrumentError: ``task_failed`` when the operator marks it failed,
                ``task_cancelled`` when it was cancelled from the store.
        """
        spec = self._actions.get(action)
        if spec is None:
            raise InstrumentError(self.name, "unknown_action", f"no action {action!r}")
        request_id = current_request_id()
        if request_id is None:
            raise InstrumentError(self.name, "internal", "no request id (not run by a server)")
        task_id = await asyncio.to_thread(self._open, request_id, spec, dict(parameters))
        logger.info("instrument %s: task %d open for %s", self.name, task_id, request_id)
        try:
            while True:
                status, values, reason = await asyncio.to_thread(self._read, request_id)
                if status == TaskStatus.DONE:
                    units = {o.name: o.unit for o in spec.outputs}
                    return [
                        Measurement(name=k, value=float(v), unit=units.get(k, ""))
                        for k, v in (values or {}).items()
                    ]
                if status == TaskStatus.FAILED:
                    raise InstrumentError(
                        self.name, TASK_FAILED, f"task {task_id} failed: {reason or 'no reason'}"
                    )
                if status == TaskStatus.CANCELLED:
                    raise InstrumentError(
                        self.name, "task_cancelled", f"task {task_id} cancelled: {reason}"
                    )
                await asyncio.sleep(self.options.poll_s)
        except asyncio.CancelledError:
            # the request was cancelled (deadline, emergency stop): so is the task
            with contextlib.suppress(Exception):
                self._cancel(request_id, "the action was cancelled")
            raise

    async def safe_state(self) -> str:
        """Cancel this instrument's unfinished tasks, so no one goes on with them."""

        def cancel_all() -> int:
            with transaction(self._store()) as s:
                rows = list_tasks(s, instrument=self.name)
                for row in rows:
                    cancel_task(s, row.request_id, f"instrument:{self.name}", "emergency stop")
                return len(rows)

        n = await asyncio.to_thread(cancel_all)
        return f"{n} open task(s) cancelled: the operator is told to stop"

    async def close(self) -> None:
        """Close the store."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
            self._sessions = None
