"""Running one step of an experiment and writing down what came of it.

A step is written as RUNNING ("may have been sent") and committed *before* it is sent, with
a request id derived from the experiment; the instrument's answer is written with its
measurements in one transaction, and the experiment moves on to its next step or is
COMPLETED and the planner told. A failed action fails the experiment (the planner learns
the point is infeasible); an action the instrument reports as ``interrupted`` (its server
restarted mid-action) is run again as a new attempt flagged ``rerun`` when it is declared
safe to re-run.

:class:`StepRunner` is the part of :class:`~controller.loop.CampaignController` that does
this; the attributes it declares are the controller's.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from controller.alarms import Alarms
from controller.costs import CostLedger
from controller.health import HealthMonitor
from controller.planning import PlannerClient
from controller.safety import SafetyGate
from controller.scheduling import Dispatcher
from controller.store import add_event, transaction
from controller.store.hot import finish_step, move_experiment, start_step
from controller.store.queries import known_observations
from controller.work import ControllerOptions, InstrumentSlot, Work
from instruments.client import RequestState
from instruments.driver import ActionSpec
from instruments.protocol import (
    INTERNAL,
    INTERRUPTED,
    PARAMETER_OUT_OF_LIMITS,
    REQUEST_ID_CONFLICT,
    UNKNOWN_ACTION,
    UNKNOWN_REQUEST,
    UNSUPPORTED_PROTOCOL,
)
from models.campaign import CampaignSpec
from models.errors import InstrumentError, ParameterLimitError
from models.params import ParamValue
from models.status import CampaignStatus, ExperimentStatus, StepStatus
from models.tables import ExperimentRow

if TYPE_CHECKING:
    from controller.estop import EmergencyStop

logger = logging.getLogger(__name__)


class StepRunner:
    """Dispatches steps and records their outcome (mixed into the campaign controller)."""

    spec: CampaignSpec
    options: ControllerOptions
    campaign_id: int
    uid: str
    gate: SafetyGate | None
    max_failures: int
    _sessions: sessionmaker[Session]
    _planner: PlannerClient | None
    _timeouts: dict[str, float | None]
    _in_flight: dict[int, dict[str, ParamValue]]
    _ready: dict[str, deque[Work]]
    _status: dict[int, ExperimentStatus]
    _earlier: dict[int, dict[str, float]]
    _completed: int
    ledger: CostLedger
    _failed: int
    _abandoned: int
    _final: CampaignStatus | None
    _known_seq: int
    _refused_in_a_row: int
    health: HealthMonitor | None
    alarms: Alarms
    dispatch: Dispatcher
    estop: EmergencyStop

    def _stop(self, status: CampaignStatus, reason: str) -> None:
        """Stop starting new experiments (the controller's scheduling decides how)."""
        raise NotImplementedError

    def _spawn(self, coro: Any) -> None:
        """Run a coroutine in the background (the controller keeps the task)."""
        raise NotImplementedError

    async def _notify(self) -> None:
        """Wake the workers (the controller owns the condition)."""
        raise NotImplementedError

    def _refused(self, message: str) -> None:
        """Count a proposal refused by the safety gate (the intake keeps the streak)."""
        raise NotImplementedError

    async def _teach(self) -> None:
        """Tell the planner what the store records as known since it was last taught.

        What the planner knows is defined by one function,
        :func:`~controller.store.queries.known_observations`, read here after every write
        that adds to it and before every ask, and read from the start by a restarted
        controller or planner actor: a restarted campaign holds the same observations in
        the same order, and so makes the decisions the uninterrupted one would have made.
        The cursor moves before the tell is sent, so overlapping calls never tell an
        observation twice, and tells reach the planner in order.
        """
        if self._planner is None:
            return
        with transaction(self._sessions, read_only=True) as s:
            new, last = known_observations(
                s, self.campaign_id, list(self.spec.objectives), after=self._known_seq
            )
        if not new:
            return
        self._known_seq = last
        try:
            await self._planner.tell(new)
        except Exception:  # a planner that refuses an observation must not stop the loop
            logger.exception(
                "campaign %d: the planner refused %d observations", self.campaign_id, len(new)
            )

    def _log_refusal(self, s: Session, experiment_id: int, exc: ParameterLimitError) -> None:
        add_event(
            s,
            "safety.refused",
            str(exc),
            campaign_id=self.campaign_id,
            experiment_id=experiment_id,
            instrument=exc.instrument,
            data={"parameter": exc.parameter, "value": repr(exc.value), "limit": exc.limit},
        )
        self._abandoned += 1

    # ------------------------------------------------------------------ one step

    def _forget(self, work: Work) -> None:
        """The experiment is no longer in flight."""
        done = self._status.get(work.experiment_id) == ExperimentStatus.COMPLETED
        self.ledger.finish(work.experiment_id, done)
        self._in_flight.pop(work.experiment_id, None)
        self._status.pop(work.experiment_id, None)
        self._earlier.pop(work.experiment_id, None)
        self.dispatch.forget(work.experiment_id)

    def request_id(self, experiment_id: int, index: int, attempt: int) -> str:
        """The request id of a step: derived from the experiment, unique per attempt."""
        return f"{self.uid[:12]}-{experiment_id}-{index}-{attempt}"

    async def _execute(self, slot: InstrumentSlot, work: Work) -> None:
        assert self.gate is not None
        if self.estop.holds(work):  # emergency stop (controller/estop.py): send nothing
            self.estop.record_step(slot, work, None)
            return
        step_spec = self.spec.workflow[work.index]
        params = self.gate.step_parameters(work.index, work.point)
        try:
            self.gate.check_dispatch(slot.name, work.index, params)
        except ParameterLimitError as exc:
            with transaction(self._sessions) as s:
                self._move(
                    s, work, ExperimentStatus.ABANDONED, f"safety gate: {exc}", infeasible=True
                )
                self._log_refusal(s, work.experiment_id, exc)
            self._forget(work)
            self._refused(str(exc))
            await self._teach()
            return
        if work.step_id is None:
            rid = self.request_id(work.experiment_id, work.index, work.attempt)
            with transaction(self._sessions) as s:
                # Written as RUNNING ("may have been sent") and committed before the send,
                # so after a crash a step the instrument does not know is never re-run
                # silently.
                step_id = start_step(
                    s,
                    work.experiment_id,
                    index=work.index,
                    kind=step_spec.kind,
                    action=step_spec.action,
                    parameters=params,
                    request_id=rid,
                    instrument=slot.name,
                    attempt=work.attempt,
                    rerun=work.rerun,
                )
                if self._current(s, work.experiment_id) != ExperimentStatus.RUNNING:
                    self._move(s, work, ExperimentStatus.RUNNING)
                self.dispatch.record_start(s, slot, work)
                if work.rerun:
                    # in the step's own transaction: every re-run step has its event
                    add_event(
                        s,
                        "step.rerun",
                        f"experiment {work.experiment_id} step {work.index} "
                        f"({step_spec.action}) runs again as attempt {work.attempt} on "
                        f"{slot.name}: {work.reason or 'an earlier attempt left no result'}",
                        campaign_id=self.campaign_id,
                        experiment_id=work.experiment_id,
                        instrument=slot.name,
                        data={"request_id": rid, "attempt": work.attempt},
                    )
            work.step_id, work.request_id = step_id, rid
            if work.index == 0:
                self._refused_in_a_row = 0  # an experiment got through: progress
        assert work.request_id is not None
        action = self.gate.action(slot.name, work.index)
        timeout_s = self._timeouts.get(slot.name) or action.timeout_s
        outcome = await self._drive(slot, work, step_spec.action, params, timeout_s)
        if self.estop.claims(outcome):  # cancelled by an emergency stop (controller/estop.py)
            self.estop.record_step(slot, work, outcome)
            return
        if isinstance(outcome, _Refused):
            self._fail_experiment(work, slot.name, outcome.code, outcome.message)
            return
        if isinstance(outcome, _Lost):
            assert self.health is not None
            self.health.fault(slot, outcome.code, outcome.message)
            self._retry_or_fail(
                slot, work, outcome.code, outcome.message, None, fate_known=outcome.known
            )
            return
        problem = self._schema_problem(action, outcome)
        if problem is not None:
            assert self.health is not None
            self.health.fault(slot, "bad_result", problem)
            self._retry_or_fail(slot, work, "bad_result", problem, outcome, fate_known=True)
            return
        try:
            await self._record(slot, work, outcome)
        except InstrumentError as exc:  # a result that does not carry the objectives
            self._fail_experiment(work, slot.name, exc.code, str(exc), outcome)

    async def _drive(
        self,
        slot: InstrumentSlot,
        work: Work,
        action: str,
        params: dict[str, Any],
        timeout_s: float,
    ) -> RequestState | _Lost | _Refused:
        """Submit a step (unless adopted) and follow it to its end or its deadline.

        Transport faults (no reply, a garbled reply, the instrument off the network) do not
        end the step: the request id is idempotent, so the submit is sent again or the
        status asked again, with backoff, until the action's deadline. At the deadline the
        request is cancelled; its fate is known only if the cancel is answered.
        """
        assert work.request_id is not None
        assert self.health is not None
        assert self.gate is not None
        gate = self.gate
        rid = work.request_id
        deadline = time.monotonic() + timeout_s
        submitted = work.adopt
        pause_s = 0.1
        while (left := deadline - time.monotonic()) > 0:
            try:
                if submitted:
                    state = await slot.client.status(rid, wait_s=min(POLL_S, left))
                else:
                    wait_s = min(self.options.submit_wait_s, left)
                    try:
                        state = await slot.client.submit(rid, action, params, wait_s=wait_s)
                    except InstrumentError as exc:
                        if exc.code not in REFUSALS:  # it may have arrived all the same
                            gate.sent(slot.name, work.index, params, acknowledged=False)
                        raise
                    gate.sent(slot.name, work.index, params, acknowledged=True)
                    submitted = True
            except InstrumentError as exc:
                if exc.code in REFUSALS:
                    return _Refused(exc.code, str(exc))
                if exc.code == UNKNOWN_REQUEST and submitted:
                    return _Lost(exc.code, f"{slot.name} no longer knows request {rid}")
                self.health.fault(slot, exc.code, str(exc))
                await asyncio.sleep(min(pause_s, max(0.0, deadline - time.monotonic())))
                pause_s = min(pause_s * 2, MAX_TRANSPORT_PAUSE_S)
                continue
            self.health.seen(slot)
            if state.terminal:
                return state
        try:
            state = await slot.client.cancel(rid)
        except InstrumentError as exc:
            logger.warning("could not cancel %s on %s: %s", rid, slot.name, exc)
            slot.orphans.add(rid)  # cancelled again when the instrument answers
            return _Lost("timeout", f"no result within {timeout_s:.3g} s and no answer to cancel")
        if state.state == "completed":
            return state  # finished just as the deadline passed
        # Answered: the action is stopped (cancelled) or ended otherwise; its fate is known.
        return _Lost("timeout", f"no result within {timeout_s:.3g} s; {state.state}", known=True)

    def _retry_safe(self, slot: InstrumentSlot, work: Work) -> bool:
        return self.gate is not None and self.gate.action(slot.name, work.index).retry_safe

    @staticmethod
    def _schema_problem(action: ActionSpec, state: RequestState) -> str | None:
        """What is wrong with a completed result, measured against the declared outputs."""
        if state.state != "completed":
            return None
        declared = {o.name for o in action.outputs}
        got = [m.name for m in state.measurements]
        missing = sorted(declared - set(got))
        extra = sorted(set(got) - declared)
        if missing or extra:
            return f"result breaks the declared outputs: missing {missing}, undeclared {extra}"
        bad = [
            m.name for m in state.measurements if m.value is not None and not math.isfinite(m.value)
        ]
        if bad:
            return f"result has non-finite values for {bad}"
        return None

    async def _record(self, slot: InstrumentSlot, work: Work, state: RequestState) -> None:
        """Write a finished request's outcome and move the experiment on."""
        assert self.health is not None
        if state.state != "completed":
            err = state.error
            code = err.code if err else str(state.state)
            msg = err.message if err else f"request ended {state.state}"
            if err is not None and (err.retryable or code in (INTERRUPTED, INTERNAL)):
                # the instrument's fault, not the sample's: count it, and try again if safe
                self.health.fault(slot, code, msg)
                self._retry_or_fail(slot, work, code, msg, state, fate_known=True)
                return
            self._fail_experiment(work, slot.name, code, msg, state)
            return
        self.health.succeeded(slot)
        last = work.index == len(self.spec.workflow) - 1
        if last:
            # The planner learns the result from the store (see _teach), as a restarted one does.
            values = self._objective_values(work, state)
            missing = [o.name for o in self.spec.objectives if o.name not in values]
            if missing:
                raise InstrumentError(
                    slot.name, "bad_result", f"objectives missing from the result: {missing}"
                )
        assert work.step_id is not None
        with transaction(self._sessions) as s:
            self._end_step(s, work, StepStatus.COMPLETED, state=state)
            if last:
                self._move(s, work, ExperimentStatus.COMPLETED)
        if not last:
            earlier = self._earlier.setdefault(work.experiment_id, {})
            earlier.update({m.name: m.value for m in state.measurements if m.value is not None})
            nxt = Work(work.experiment_id, work.index + 1, work.point)
            self._ready[self.spec.workflow[work.index + 1].kind].append(nxt)
            return
        self._forget(work)
        self._completed += 1
        await self._teach()

    @staticmethod
    def _end_step(
        s: Session,
        work: Work,
        status: StepStatus,
        *,
        error: str | None = None,
        state: RequestState | None = None,
    ) -> None:
        """Write how a step ended (compare-and-set from the status it was written with),
        with the instrument's timestamps and, for a completed step, its measurements."""
        assert work.step_id is not None
        finish_step(
            s,
            work.step_id,
            work.experiment_id,
            status,
            current=work.step_status,
            error=error,
            started_at=state.started_at if state else None,
            finished_at=state.finished_at if state else None,
            measurements=state.measurements if state and status == StepStatus.COMPLETED else (),
        )

    def _objective_values(self, work: Work, state: RequestState) -> dict[str, float]:
        """Objective values from this step's result, else from the experiment's earlier steps."""
        values = dict(self._earlier.get(work.experiment_id, {}))
        values.update({m.name: m.value for m in state.measurements if m.value is not None})
        return {k: float(v) for k, v in values.items()}

    def _move(
        self,
        s: Session,
        work: Work,
        target: ExperimentStatus,
        reason: str | None = None,
        *,
        infeasible: bool = False,
    ) -> None:
        """Change an in-flight experiment's status (compare-and-set in the store);
        ``infeasible``: it is ABANDONED as infeasible, and the planner learns it."""
        current = self._current(s, work.experiment_id)
        self._status[work.experiment_id] = move_experiment(
            s, work.experiment_id, current, target, reason=reason, infeasible=infeasible
        )
        self.dispatch.record_end(s, work.experiment_id, target)

    def _current(self, s: Session, experiment_id: int) -> ExperimentStatus:
        """An in-flight experiment's status (read once from the store after a restart)."""
        current = self._status.get(experiment_id)
        if current is None:
            current = s.get_one(ExperimentRow, experiment_id).status
            self._status[experiment_id] = current
        return current

    def rerun(self, work: Work, reason: str) -> None:
        """Mark a step whose fate was lost INTERRUPTED and queue it again, flagged as a re-run.

        Only for actions their instrument declared safe to re-run.
        """
        assert work.step_id is not None
        with transaction(self._sessions) as s:
            self._end_step(s, work, StepStatus.INTERRUPTED, error=reason)
            add_event(
                s,
                "step.retry",
                f"experiment {work.experiment_id} step {work.index} "
                f"({self.spec.workflow[work.index].action}) will run again as attempt "
                f"{work.attempt + 1}: {reason}",
                campaign_id=self.campaign_id,
                experiment_id=work.experiment_id,
                data={"request_id": work.request_id, "attempt": work.attempt + 1},
            )
        nxt = Work(
            work.experiment_id, work.index, work.point, work.attempt + 1, True, reason=reason
        )
        self._ready[self.spec.workflow[work.index].kind].appendleft(nxt)

    def _retry_or_fail(
        self,
        slot: InstrumentSlot,
        work: Work,
        code: str,
        message: str,
        state: RequestState | None,
        *,
        fate_known: bool,
    ) -> None:
        """After an instrument fault: try the step again if safe, else fail or interrupt it.

        A retry is a new attempt flagged ``rerun``, queued for any instrument of the kind
        after an exponential backoff. An action not declared safe to re-run is never sent
        twice: if it surely stopped, the experiment fails; if its fate is unknown, the
        experiment waits INTERRUPTED for an operator's decision.
        """
        rel = self.spec.reliability
        safe = self._retry_safe(slot, work)
        if safe and work.attempt < rel.max_attempts and self._final != CampaignStatus.ABORTED:
            delay = min(rel.backoff_s * 2 ** (work.attempt - 1), rel.backoff_max_s)
            assert work.step_id is not None
            with transaction(self._sessions) as s:
                ended = StepStatus.FAILED if fate_known else StepStatus.INTERRUPTED
                self._end_step(s, work, ended, error=f"{code}: {message}", state=state)
                add_event(
                    s,
                    "step.retry",
                    f"experiment {work.experiment_id} step {work.index} on {slot.name}: "
                    f"{code}: {message}; attempt {work.attempt + 1} of {rel.max_attempts} "
                    f"in {delay:.3g} s",
                    campaign_id=self.campaign_id,
                    experiment_id=work.experiment_id,
                    instrument=slot.name,
                    data={"code": code, "attempt": work.attempt + 1, "delay_s": delay},
                )
            why = f"{code} on {slot.name}: {message}"
            nxt = Work(
                work.experiment_id, work.index, work.point, work.attempt + 1, True, reason=why
            )
            self._spawn(self._requeue_after(nxt, delay))
            return
        if not safe and not fate_known:
            self._interrupt(work, slot.name, code, message)
            return
        self._fail_experiment(work, slot.name, code, message, state)

    async def _requeue_after(self, work: Work, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        if self._final == CampaignStatus.ABORTED:
            with transaction(self._sessions) as s:
                self._move(s, work, ExperimentStatus.ABANDONED, "campaign aborted before a retry")
            self._forget(work)
            self._abandoned += 1
        else:
            self._ready[self.spec.workflow[work.index].kind].appendleft(work)
        await self._notify()

    def _interrupt(self, work: Work, instrument: str, code: str, message: str) -> None:
        """Leave an experiment INTERRUPTED for an operator: its step's fate is unknown."""
        assert work.step_id is not None
        with transaction(self._sessions) as s:
            self._end_step(s, work, StepStatus.INTERRUPTED, error=f"{code}: {message}")
            self._move(s, work, ExperimentStatus.INTERRUPTED, f"{code}: {message}")
            self.alarms.raise_(
                "decision_needed",
                f"experiment {work.experiment_id} step {work.index} on {instrument}: {code}: "
                f"{message}; the action is not safe to re-run, so it waits for an operator "
                "(resolve it with rerun or fail)",
                instrument=instrument,
                experiment_id=work.experiment_id,
                data={"code": code},
                session=s,
            )
        self._forget(work)

    def _fail_experiment(
        self,
        work: Work,
        instrument: str | None,
        code: str,
        message: str,
        state: RequestState | None = None,
    ) -> None:
        with transaction(self._sessions) as s:
            if work.step_id is not None:
                self._end_step(s, work, StepStatus.FAILED, error=f"{code}: {message}", state=state)
            if self._current(s, work.experiment_id) in (
                ExperimentStatus.QUEUED,
                ExperimentStatus.PROPOSED,
            ):
                self._move(s, work, ExperimentStatus.RUNNING)
            self._move(s, work, ExperimentStatus.FAILED, f"{code}: {message}")
            add_event(
                s,
                "step.failed",
                f"experiment {work.experiment_id} step {work.index} on {instrument}: "
                f"{code}: {message}",
                campaign_id=self.campaign_id,
                experiment_id=work.experiment_id,
                instrument=instrument,
                data={"code": code},
            )
        self._forget(work)
        self._failed += 1
        self._spawn(self._teach())
        if self._failed >= self.max_failures:
            self._stop(CampaignStatus.FAILED, f"{self._failed} experiments failed")


POLL_S = 1.0
"""Long-poll window of each status call while a step runs, in seconds."""

MAX_TRANSPORT_PAUSE_S = 5.0
"""Longest pause between two tries to reach an instrument during one step, in seconds."""

REFUSALS = frozenset(
    {UNKNOWN_ACTION, PARAMETER_OUT_OF_LIMITS, REQUEST_ID_CONFLICT, UNSUPPORTED_PROTOCOL}
)
"""Error replies that refuse a request for good: sending it again cannot help."""


@dataclass(frozen=True)
class _Lost:
    """A step whose result never came: ``known`` if the instrument confirmed it stopped."""

    code: str
    message: str
    known: bool = False


@dataclass(frozen=True)
class _Refused:
    """A step the instrument refused outright."""

    code: str
    message: str
