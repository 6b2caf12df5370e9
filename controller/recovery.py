"""Recovery: reconcile what the store says was in flight with what the instruments know.

Runs once when a controller starts, before anything new is proposed (DESIGN.md, point 5).
For every experiment the store holds as in flight (PROPOSED, QUEUED, RUNNING):

- a step written but maybe never sent (QUEUED): ask its instrument. If the instrument knows
  the request id, adopt it; if not, it never ran, so send it again with the *same* id
  (idempotent: even a delayed original cannot make it run twice);
- a step sent (RUNNING): ask its instrument. Finished there: collect the result, do not run
  it again. Still running: wait for it. Unknown (the instrument lost it): the step becomes
  INTERRUPTED; if its action is declared safe to re-run it is run again as a new attempt
  flagged ``rerun``, otherwise the experiment waits as INTERRUPTED for an operator. Either
  way the lost request is cancelled at its instrument when that answers (a delayed copy of
  the submit is then never run);
- no step in flight: its next step (or its first) is queued;
- PROPOSED (written, never gated): it goes through the safety gate now, and waits for an
  operator's approval again if the campaign requires one.

Every decision is written to the event log, through the campaign's
:class:`~controller.writer.Writer` (the loop's own writes, with the loop's events); what is
found in flight is entered in the :class:`~controller.book.Book`.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from controller.book import Book
from controller.steps import StepRunner
from controller.store import experiments_in_status
from controller.work import Lifecycle, Work
from controller.writer import Writer
from instruments.client import RequestState
from models.errors import InstrumentError, ParameterLimitError
from models.params import ParamValue
from models.status import IN_FLIGHT_EXPERIMENT, IN_FLIGHT_STEP, ExperimentStatus, StepStatus
from models.tables import StepRow

logger = logging.getLogger(__name__)

_Plan = list[tuple[int, ExperimentStatus, dict[str, ParamValue], list[StepRow]]]


class Recovery:
    """Reconciles a campaign's unfinished experiments at controller start.

    Args:
        ctl: The controller, connected to its instruments, gate built.
        book: The campaign's in-flight state (filled in here).
        writer: The campaign's writer.
        steps: The step runner (re-runs, refusals).
    """

    def __init__(self, ctl: Lifecycle, book: Book, writer: Writer, steps: StepRunner) -> None:
        self.ctl = ctl
        self.book = book
        self.writer = writer
        self.steps = steps
        self.summary: dict[str, int] = {}

    def _count(self, what: str) -> None:
        self.summary[what] = self.summary.get(what, 0) + 1

    def _read_plan(self, s: Session) -> _Plan:
        rows = experiments_in_status(s, self.ctl.campaign_id, sorted(IN_FLIGHT_EXPERIMENT))
        plan: _Plan = [(r.id, r.status, dict(r.parameters), list(r.steps)) for r in rows]
        for row in rows:
            s.expunge(row)
        for _, _, _, steps in plan:
            for st in steps:
                s.expunge(st)
        return plan

    async def reconcile(self) -> dict[str, int]:
        """Reconcile every unfinished experiment; returns counts of what was done."""
        ctl, book = self.ctl, self.book
        assert ctl.gate is not None
        plan = await self.writer.read(self._read_plan)
        for exp_id, status, point, steps in plan:
            if status == ExperimentStatus.PROPOSED:
                await self._gate_proposed(exp_id, point)
                continue
            active = [st for st in steps if st.status in IN_FLIGHT_STEP]
            done = {st.index for st in steps if st.status == StepStatus.COMPLETED}
            book.admit(exp_id, point)
            if active:
                await self._reconcile_step(exp_id, point, active[-1])
                continue
            nxt = max(done) + 1 if done else 0
            if nxt >= len(ctl.spec.workflow):
                # every step done but the experiment never closed: close it from the store
                self._count("closed")
                book.in_flight.pop(exp_id, None)
                continue
            tried = [st.attempt for st in steps if st.index == nxt]
            if tried:
                # an earlier attempt ended without a result (a retry was due when the
                # controller stopped): the next attempt is a flagged re-run
                work = Work(
                    exp_id,
                    nxt,
                    point,
                    max(tried) + 1,
                    True,
                    reason="its last attempt ended without a result before the restart",
                )
                self._count("retried")
            else:
                work = Work(exp_id, nxt, point)
                self._count("requeued")
            book.queue(work)
        if self.summary:
            message = "reconciled unfinished experiments: " + ", ".join(
                f"{k} {v}" for k, v in sorted(self.summary.items())
            )
            summary = dict(self.summary)
            await self.writer.run(
                lambda s: self.writer.event(s, "recovery.done", message, data=summary)
            )
        return self.summary

    async def _gate_proposed(self, exp_id: int, point: dict[str, ParamValue]) -> None:
        ctl, book = self.ctl, self.book
        assert ctl.gate is not None
        try:
            clean = ctl.gate.check_proposal(point)
        except ParameterLimitError as exc:
            refusal = exc

            def refuse(s: Session) -> None:
                self.writer.move(
                    s,
                    exp_id,
                    ExperimentStatus.PROPOSED,
                    ExperimentStatus.ABANDONED,
                    f"safety gate: {refusal}",
                    infeasible=True,
                )
                self.steps.log_refusal(s, exp_id, refusal)

            await self.writer.run(refuse)
            book.abandoned += 1
            self.steps.refused(str(exc))
            self._count("refused")
            return
        if ctl.spec.safety.require_approval:
            book.admit(exp_id, clean, ExperimentStatus.PROPOSED)
            book.hold(exp_id)
            self._count("awaiting approval")
            return
        await self.writer.run(
            lambda s: self.writer.move(
                s, exp_id, ExperimentStatus.PROPOSED, ExperimentStatus.QUEUED
            )
        )
        book.admit(exp_id, clean, ExperimentStatus.QUEUED)
        book.queue(Work(exp_id, 0, clean))
        self._count("gated")

    async def _reconcile_step(
        self, exp_id: int, point: dict[str, ParamValue], step: StepRow
    ) -> None:
        ctl = self.ctl
        slot = ctl.instruments.get(step.instrument or "")
        state: RequestState | None = None
        if slot is not None and slot.description is not None:
            try:
                state = await slot.client.status(step.request_id)
            except InstrumentError as exc:
                if exc.code != "unknown_request":
                    raise
        known = state is not None
        work = Work(
            exp_id,
            step.index,
            point,
            attempt=step.attempt,
            rerun=step.rerun,
            step_id=step.id,
            request_id=step.request_id,
            step_status=StepStatus(step.status),
        )
        if known and slot is not None:
            # The instrument has it: collect a finished result or wait for a running one.
            assert state is not None
            work.adopt = True
            slot.resume.append(work)
            await self._log(
                exp_id, step, f"request {step.request_id} is {state.state} at {slot.name}"
            )
            self._count("collected" if state.terminal else "adopted")
            return
        if step.status == StepStatus.QUEUED and slot is not None:
            # Written but never accepted: sending it now with the same id cannot duplicate it.
            slot.resume.append(work)
            await self._log(
                exp_id, step, f"request {step.request_id} never reached {step.instrument}"
            )
            self._count("resent")
            return
        # Its fate is unknown: the step is interrupted.
        if slot is not None and step.status == StepStatus.RUNNING:
            # A copy of its submit may still be on the way (delayed in a network that was
            # down, or sent while the instrument was unreachable): cancel the request as
            # soon as the instrument answers, so that it never runs after the step moved on.
            slot.orphans.add(step.request_id)
        able = ctl.gate.instruments_for(step.index) if ctl.gate else []
        action = ctl.gate.action(able[0], step.index) if ctl.gate and able else None
        where = step.instrument or "its instrument"
        if action is not None and action.retry_safe:
            await self.steps.rerun(work, f"{where} does not know request {step.request_id}")
            self._count("rerun")
            return

        def interrupt(s: Session) -> None:
            self.writer.end_step(
                s, work, StepStatus.INTERRUPTED, error="fate unknown after restart"
            )
            current = self.steps.current(s, exp_id)
            self.writer.move(
                s,
                exp_id,
                current,
                ExperimentStatus.INTERRUPTED,
                "step fate unknown; not re-runnable",
            )
            ctl.alarms.raise_(
                "decision_needed",
                f"experiment {exp_id} step {step.index} ({step.action}) was interrupted and "
                "its action is not safe to re-run: an operator must decide (resolve it with "
                "rerun or fail)",
                instrument=step.instrument,
                experiment_id=exp_id,
                session=s,
            )

        await self.writer.run(interrupt)
        self.book.set_aside(exp_id)
        self._count("interrupted")

    async def _log(self, exp_id: int, step: StepRow, message: str) -> None:
        logger.info("recovery: experiment %d step %d: %s", exp_id, step.index, message)
        data = {"request_id": step.request_id, "step_status": step.status}
        await self.writer.run(
            lambda s: self.writer.event(
                s,
                "recovery.step",
                message,
                experiment_id=exp_id,
                instrument=step.instrument,
                data=data,
            )
        )
