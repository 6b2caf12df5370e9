"""Running one step of an experiment and writing down what came of it.

A step is written as RUNNING ("may have been sent") and committed *before* it is sent, with
a request id derived from the experiment; the instrument's answer is written with its
measurements in one transaction, and the experiment moves on to its next step or is
COMPLETED and the planner told. A failed action fails the experiment (the planner learns
the point is infeasible); an action the instrument reports as ``interrupted`` (its server
restarted mid-action) is run again as a new attempt flagged ``rerun`` when it is declared
safe to re-run (:func:`~controller.outcomes.retry_decision` is the rule).

:class:`StepRunner` does this for the campaign controller: it changes the campaign's
in-flight state only through the :class:`~controller.book.Book` and writes only through the
:class:`~controller.writer.Writer`; the controller it is given (see
:class:`~controller.work.Lifecycle`) keeps the lifecycle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy.orm import Session

from controller.book import Book
from controller.outcomes import (
    MAX_TRANSPORT_PAUSE_S,
    POLL_S,
    REFUSALS,
    Lost,
    Refused,
    retry_decision,
    schema_problem,
)
from controller.store.lab import GrantConflictError
from controller.store.queries import known_observations
from controller.work import InstrumentSlot, Lifecycle, Work
from controller.writer import Writer
from instruments.client import RequestState
from instruments.protocol import INTERNAL, INTERRUPTED, UNKNOWN_REQUEST
from models.errors import InstrumentError, ParameterLimitError
from models.status import CampaignStatus, ExperimentStatus, StepStatus
from models.tables import ExperimentRow

__all__ = ["POLL_S", "StepRunner", "retry_decision"]

logger = logging.getLogger(__name__)


class StepRunner:
    """Dispatches steps and records their outcome.

    Args:
        ctl: The controller (its spec, gate, planner, instruments and lifecycle).
        book: The campaign's in-flight state.
        writer: The campaign's writer.
    """

    def __init__(self, ctl: Lifecycle, book: Book, writer: Writer) -> None:
        self.ctl = ctl
        self.book = book
        self.writer = writer
        self.spec = ctl.spec
        self._timeouts = {i.name: i.timeout_s for i in self.spec.instruments}
        # The last known_seq taught to the planner (see teach); the lock keeps the read
        # and the tell of overlapping calls in order.
        self.known_seq = 0
        self._teaching: asyncio.Lock | None = None
        # Experiments that left the in-flight set with a result the planner learns (ended
        # and written), and how many of those the last teach's read included: an ask waits
        # until they agree, so no point is in neither the planner's data nor its pending.
        self.ended = 0
        self.taught = 0
        # Results of finished requests still being written in the background (the
        # instrument's worker went on to its next step meanwhile).
        self.recording = 0

    # ------------------------------------------------------------------ the planner

    async def teach(self) -> None:
        """Tell the planner what the store records as known since it was last taught.

        What the planner knows is defined by one function,
        :func:`~controller.store.queries.known_observations`, read here after every write
        that adds to it and before every ask, and read from the start by a restarted
        controller or planner actor: a restarted campaign holds the same observations in
        the same order, and so makes the decisions the uninterrupted one would have made.
        The read goes through the writer (it sees every write asked for before it); one
        call at a time reads and tells, so no observation is told twice, and tells reach
        the planner in order.
        """
        planner = self.ctl.planner
        if planner is None:
            return
        if self._teaching is None:
            self._teaching = asyncio.Lock()
        objectives = list(self.spec.objectives)
        async with self._teaching:
            after = self.known_seq
            ended = self.ended  # every one of these was written before the read below
            new, last = await self.writer.read(
                lambda s: known_observations(s, self.ctl.campaign_id, objectives, after=after)
            )
            self.taught = max(self.taught, ended)
            if not new:
                return
            self.known_seq = last
            try:
                await planner.tell(new)
            except Exception:  # a planner that refuses an observation must not stop the loop
                logger.exception(
                    "campaign %d: the planner refused %d observations",
                    self.ctl.campaign_id,
                    len(new),
                )

    async def teach_all(self) -> None:
        """Teach until the planner holds every experiment that has left the in-flight set:
        on return (with no await in between) the in-flight set and what the planner knows
        together hold every experiment of the campaign that has run."""
        await self.teach()
        while self.taught < self.ended:
            await self.teach()

    def log_refusal(self, s: Session, experiment_id: int, exc: ParameterLimitError) -> None:
        """Write the event of a point the safety gate refused (the caller counts it
        ABANDONED)."""
        self.writer.event(
            s,
            "safety.refused",
            str(exc),
            experiment_id=experiment_id,
            instrument=exc.instrument,
            data={"parameter": exc.parameter, "value": repr(exc.value), "limit": exc.limit},
        )

    def refused(self, message: str) -> None:
        """Count a proposal the safety gate refused; stop the campaign after
        ``reliability.max_refused_in_a_row`` in a row (it cannot make progress).

        The streak ends when an experiment's first step is sent (see :meth:`execute`).
        """
        book = self.book
        book.refused_in_a_row += 1
        limit = self.spec.reliability.max_refused_in_a_row
        if book.refused_in_a_row < limit or self.ctl.final is not None:
            return
        reason = (
            f"no progress: the last {book.refused_in_a_row} proposals were all refused "
            f"by the safety gate; last refusal: {message}"
        )
        self.ctl.alarms.raise_(
            "no_progress",
            f"campaign {self.ctl.name} stopped: {reason}",
            data={"refused_in_a_row": book.refused_in_a_row, "last_refusal": message},
        )
        self.ctl.stop(CampaignStatus.FAILED, reason)

    # ------------------------------------------------------------------ one step

    def forget(self, work: Work) -> None:
        """The experiment is no longer in flight."""
        self.book.finish(work.experiment_id)
        self.ctl.dispatch.forget(work.experiment_id)

    def request_id(self, experiment_id: int, index: int, attempt: int) -> str:
        """The request id of a step: derived from the experiment, unique per attempt."""
        return f"{self.ctl.uid[:12]}-{experiment_id}-{index}-{attempt}"

    async def execute(self, slot: InstrumentSlot, work: Work) -> None:
        """Send one step to ``slot`` and record what came of it."""
        ctl = self.ctl
        gate = ctl.gate
        assert gate is not None
        if ctl.estop.holds(work):  # emergency stop (controller/estop.py): send nothing
            await ctl.estop.record_step(slot, work, None)
            return
        step_spec = self.spec.workflow[work.index]
        params = gate.step_parameters(work.index, work.point)
        try:
            gate.check_dispatch(slot.name, work.index, params)
        except ParameterLimitError as exc:
            refusal = exc

            def refuse(s: Session) -> None:
                self.move(
                    s, work, ExperimentStatus.ABANDONED, f"safety gate: {refusal}", infeasible=True
                )
                self.log_refusal(s, work.experiment_id, refusal)

            await self.writer.run(refuse)
            self.book.abandoned += 1
            self.forget(work)
            self.refused(str(exc))
            await self.teach()
            return
        take_lab = ctl.dispatch.grant_write(work)  # the step's lab units, taken as it is written
        if work.step_id is None:
            rid = self.request_id(work.experiment_id, work.index, work.attempt)

            def write_step(s: Session) -> int:
                if take_lab is not None:  # first: a unit lost to another campaign writes nothing
                    take_lab(s)
                # Written as RUNNING ("may have been sent") and committed before the send,
                # so after a crash a step the instrument does not know is never re-run
                # silently.
                step_id = self.writer.start_step(
                    s,
                    work,
                    kind=step_spec.kind,
                    action=step_spec.action,
                    parameters=params,
                    request_id=rid,
                    instrument=slot.name,
                )
                if self.current(s, work.experiment_id) != ExperimentStatus.RUNNING:
                    self.move(s, work, ExperimentStatus.RUNNING)
                ctl.dispatch.record_start(s, slot, work)
                if work.rerun:
                    # in the step's own transaction: every re-run step has its event
                    self.writer.event(
                        s,
                        "step.rerun",
                        f"experiment {work.experiment_id} step {work.index} "
                        f"({step_spec.action}) runs again as attempt {work.attempt} on "
                        f"{slot.name}: {work.reason or 'an earlier attempt left no result'}",
                        experiment_id=work.experiment_id,
                        instrument=slot.name,
                        data={"request_id": rid, "attempt": work.attempt},
                    )
                return step_id

            try:
                work.step_id = await self.writer.run(write_step)
            except GrantConflictError as exc:
                ctl.dispatch.grant_lost(work, exc)
                return
            work.request_id = rid
            if work.index == 0:
                self.book.refused_in_a_row = 0  # an experiment got through: progress
        elif take_lab is not None:  # a step written before (never sent) takes its units alone
            try:
                await self.writer.run(take_lab)
            except GrantConflictError as exc:
                ctl.dispatch.grant_lost(work, exc)
                return
        if take_lab is not None:
            ctl.dispatch.granted(work)
        assert work.request_id is not None
        action = gate.action(slot.name, work.index)
        timeout_s = self._timeouts.get(slot.name) or action.timeout_s
        outcome = await self._drive(slot, work, step_spec.action, params, timeout_s)
        if ctl.estop.claims(outcome):  # cancelled by an emergency stop (controller/estop.py)
            await ctl.estop.record_step(slot, work, outcome)
            return
        if isinstance(outcome, Refused):
            await self.fail_experiment(work, slot.name, outcome.code, outcome.message)
            return
        health = ctl.health
        assert health is not None
        if isinstance(outcome, Lost):
            health.fault(slot, outcome.code, outcome.message)
            await self.retry_or_fail(
                slot, work, outcome.code, outcome.message, None, fate_known=outcome.known
            )
            return
        problem = schema_problem(action, outcome)
        if problem is not None:
            health.fault(slot, "bad_result", problem)
            await self.retry_or_fail(slot, work, "bad_result", problem, outcome, fate_known=True)
            return
        # The instrument is done with the step: its worker may send the next one while the
        # result is written (the writer keeps the order of the writes; the experiment stays
        # in flight until its result is recorded, so the budget holds). What the result
        # says of the instrument's health is taken into account first.
        fault = self._judge(slot, outcome)
        self.recording += 1
        self.ctl.spawn(self._record_soon(slot, work, outcome, fault))

    def _judge(self, slot: InstrumentSlot, state: RequestState) -> bool:
        """Count a finished request for or against its instrument's health; returns whether
        it ended by the instrument's fault (not the sample's)."""
        health = self.ctl.health
        assert health is not None
        err = state.error
        if state.state == "completed":
            health.succeeded(slot)
            return False
        if err is not None and (err.retryable or err.code in (INTERRUPTED, INTERNAL)):
            health.fault(slot, err.code, err.message)
            return True
        return False

    async def _record_soon(
        self, slot: InstrumentSlot, work: Work, state: RequestState, fault: bool
    ) -> None:
        """Record a finished request (in the background of its worker), then wake the
        workers: the campaign may have ended, or the experiment's next step be ready."""
        try:
            try:
                await self._record(slot, work, state, fault)
            except InstrumentError as exc:  # a result that does not carry the objectives
                await self.fail_experiment(work, slot.name, exc.code, str(exc), state)
        except Exception:  # one bad record must never stop the campaign
            logger.exception("result of experiment %d not recorded", work.experiment_id)
            await self.fail_experiment(work, None, "internal", "controller error; see log")
        finally:
            self.recording -= 1
            await self.ctl.notify()

    async def _drive(
        self,
        slot: InstrumentSlot,
        work: Work,
        action: str,
        params: dict[str, Any],
        timeout_s: float,
    ) -> RequestState | Lost | Refused:
        """Submit a step (unless adopted) and follow it to its end or its deadline.

        Transport faults (no reply, a garbled reply, the instrument off the network) do not
        end the step: the request id is idempotent, so the submit is sent again or the
        status asked again, with backoff, until the action's deadline. At the deadline the
        request is cancelled; its fate is known only if the cancel is answered.
        """
        assert work.request_id is not None
        assert self.ctl.health is not None
        assert self.ctl.gate is not None
        gate = self.ctl.gate
        rid = work.request_id
        deadline = time.monotonic() + timeout_s
        submitted = work.adopt
        pause_s = 0.1
        while (left := deadline - time.monotonic()) > 0:
            try:
                if submitted:
                    state = await slot.client.status(rid, wait_s=min(POLL_S, left))
                else:
                    wait_s = min(self.ctl.options.submit_wait_s, left)
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
                    return Refused(exc.code, str(exc))
                if exc.code == UNKNOWN_REQUEST and submitted:
                    return Lost(exc.code, f"{slot.name} no longer knows request {rid}")
                self.ctl.health.fault(slot, exc.code, str(exc))
                await asyncio.sleep(min(pause_s, max(0.0, deadline - time.monotonic())))
                pause_s = min(pause_s * 2, MAX_TRANSPORT_PAUSE_S)
                continue
            self.ctl.health.seen(slot)
            if state.terminal:
                return state
        try:
            state = await slot.client.cancel(rid)
        except InstrumentError as exc:
            logger.warning("could not cancel %s on %s: %s", rid, slot.name, exc)
            slot.orphans.add(rid)  # cancelled again when the instrument answers
            return Lost("timeout", f"no result within {timeout_s:.3g} s and no answer to cancel")
        if state.state == "completed":
            return state  # finished just as the deadline passed
        # Answered: the action is stopped (cancelled) or ended otherwise; its fate is known.
        return Lost("timeout", f"no result within {timeout_s:.3g} s; {state.state}", known=True)

    def _retry_safe(self, slot: InstrumentSlot, work: Work) -> bool:
        gate = self.ctl.gate
        return gate is not None and gate.action(slot.name, work.index).retry_safe

    async def _record(
        self, slot: InstrumentSlot, work: Work, state: RequestState, fault: bool
    ) -> None:
        """Write a finished request's outcome and move the experiment on (``fault``: it
        ended by the instrument's fault, counted by :meth:`_judge`)."""
        if state.state != "completed":
            err = state.error
            code = err.code if err else str(state.state)
            msg = err.message if err else f"request ended {state.state}"
            if fault:  # the instrument's fault, not the sample's: try again if safe
                await self.retry_or_fail(slot, work, code, msg, state, fate_known=True)
                return
            await self.fail_experiment(work, slot.name, code, msg, state)
            return
        last = work.index == len(self.spec.workflow) - 1
        if last:
            # The planner learns the result from the store (see teach), as a restarted one does.
            values = self.book.observations(work.experiment_id, state.measurements)
            missing = [o.name for o in self.spec.objectives if o.name not in values]
            if missing:
                raise InstrumentError(
                    slot.name, "bad_result", f"objectives missing from the result: {missing}"
                )
        assert work.step_id is not None

        def write(s: Session) -> None:
            self.writer.end_step(s, work, StepStatus.COMPLETED, state=state)
            if last:
                self.move(s, work, ExperimentStatus.COMPLETED)

        await self.writer.run(write)
        if not last:
            self.book.observe(work.experiment_id, state.measurements)
            self.book.queue(Work(work.experiment_id, work.index + 1, work.point))
            return
        self.forget(work)
        self.book.completed += 1
        self.ended += 1
        self.ctl.spawn(self.teach())  # in the background: the instrument is free now

    def move(
        self,
        s: Session,
        work: Work,
        target: ExperimentStatus,
        reason: str | None = None,
        *,
        infeasible: bool = False,
        actor: str = "controller",
    ) -> None:
        """Change an in-flight experiment's status (compare-and-set in the store);
        ``infeasible``: it is ABANDONED as infeasible, and the planner learns it."""
        current = self.current(s, work.experiment_id)
        self.book.status[work.experiment_id] = self.writer.move(
            s, work.experiment_id, current, target, reason, infeasible=infeasible, actor=actor
        )
        self.ctl.dispatch.record_end(s, work.experiment_id, target)

    def current(self, s: Session, experiment_id: int) -> ExperimentStatus:
        """An in-flight experiment's status (read once from the store after a restart)."""
        current = self.book.status.get(experiment_id)
        if current is None:
            current = s.get_one(ExperimentRow, experiment_id).status
            self.book.status[experiment_id] = current
        return current

    async def rerun(self, work: Work, reason: str) -> None:
        """Mark a step whose fate was lost INTERRUPTED and queue it again, flagged as a re-run.

        Only for actions their instrument declared safe to re-run.
        """
        assert work.step_id is not None

        def write(s: Session) -> None:
            self.writer.end_step(s, work, StepStatus.INTERRUPTED, error=reason)
            self.writer.event(
                s,
                "step.retry",
                f"experiment {work.experiment_id} step {work.index} "
                f"({self.spec.workflow[work.index].action}) will run again as attempt "
                f"{work.attempt + 1}: {reason}",
                experiment_id=work.experiment_id,
                data={"request_id": work.request_id, "attempt": work.attempt + 1},
            )

        await self.writer.run(write)
        nxt = Work(
            work.experiment_id, work.index, work.point, work.attempt + 1, True, reason=reason
        )
        self.book.queue(nxt, first=True)

    async def retry_or_fail(
        self,
        slot: InstrumentSlot,
        work: Work,
        code: str,
        message: str,
        state: RequestState | None,
        *,
        fate_known: bool,
    ) -> None:
        """After an instrument fault: try the step again if safe, else fail or interrupt it
        (see :func:`retry_decision`).

        A retry is a new attempt flagged ``rerun``, queued for any instrument of the kind
        after an exponential backoff.
        """
        rel = self.spec.reliability
        decision = retry_decision(
            retry_safe=self._retry_safe(slot, work),
            attempt=work.attempt,
            max_attempts=rel.max_attempts,
            aborted=self.ctl.final == CampaignStatus.ABORTED,
            fate_known=fate_known,
        )
        if decision == "interrupt":
            await self._interrupt(work, slot.name, code, message)
            return
        if decision == "fail":
            await self.fail_experiment(work, slot.name, code, message, state)
            return
        delay = min(rel.backoff_s * 2 ** (work.attempt - 1), rel.backoff_max_s)
        assert work.step_id is not None

        def write(s: Session) -> None:
            ended = StepStatus.FAILED if fate_known else StepStatus.INTERRUPTED
            self.writer.end_step(s, work, ended, error=f"{code}: {message}", state=state)
            self.writer.event(
                s,
                "step.retry",
                f"experiment {work.experiment_id} step {work.index} on {slot.name}: "
                f"{code}: {message}; attempt {work.attempt + 1} of {rel.max_attempts} "
                f"in {delay:.3g} s",
                experiment_id=work.experiment_id,
                instrument=slot.name,
                data={"code": code, "attempt": work.attempt + 1, "delay_s": delay},
            )

        await self.writer.run(write)
        why = f"{code} on {slot.name}: {message}"
        nxt = Work(work.experiment_id, work.index, work.point, work.attempt + 1, True, reason=why)
        self.ctl.spawn(self._requeue_after(nxt, delay))

    async def _requeue_after(self, work: Work, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        if self.ctl.final == CampaignStatus.ABORTED:
            await self.writer.run(
                lambda s: self.move(
                    s, work, ExperimentStatus.ABANDONED, "campaign aborted before a retry"
                )
            )
            self.forget(work)
            self.book.abandoned += 1
        else:
            self.book.queue(work, first=True)
        await self.ctl.notify()

    async def _interrupt(self, work: Work, instrument: str, code: str, message: str) -> None:
        """Leave an experiment INTERRUPTED for an operator: its step's fate is unknown."""
        assert work.step_id is not None

        def write(s: Session) -> None:
            self.writer.end_step(s, work, StepStatus.INTERRUPTED, error=f"{code}: {message}")
            self.move(s, work, ExperimentStatus.INTERRUPTED, f"{code}: {message}")
            self.ctl.alarms.raise_(
                "decision_needed",
                f"experiment {work.experiment_id} step {work.index} on {instrument}: {code}: "
                f"{message}; the action is not safe to re-run, so it waits for an operator "
                "(resolve it with rerun or fail)",
                instrument=instrument,
                experiment_id=work.experiment_id,
                data={"code": code},
                session=s,
            )

        await self.writer.run(write)
        self.forget(work)

    async def fail_experiment(
        self,
        work: Work,
        instrument: str | None,
        code: str,
        message: str,
        state: RequestState | None = None,
    ) -> None:
        """Mark an experiment FAILED (its step too, if one was written); the planner learns
        the point failed."""

        def write(s: Session) -> None:
            if work.step_id is not None:
                self.writer.end_step(
                    s, work, StepStatus.FAILED, error=f"{code}: {message}", state=state
                )
            if self.current(s, work.experiment_id) in (
                ExperimentStatus.QUEUED,
                ExperimentStatus.PROPOSED,
            ):
                self.move(s, work, ExperimentStatus.RUNNING)
            self.move(s, work, ExperimentStatus.FAILED, f"{code}: {message}")
            self.writer.event(
                s,
                "step.failed",
                f"experiment {work.experiment_id} step {work.index} on {instrument}: "
                f"{code}: {message}",
                experiment_id=work.experiment_id,
                instrument=instrument,
                data={"code": code},
            )

        await self.writer.run(write)
        self.forget(work)
        self.book.failed += 1
        self.ended += 1
        self.ctl.spawn(self.teach())
        if self.book.failed >= self.ctl.max_failures:
            self.ctl.stop(CampaignStatus.FAILED, f"{self.book.failed} experiments failed")
