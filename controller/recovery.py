"""Recovery: reconcile what the store says was in flight with what the instruments know.

Runs once when a controller starts, before anything new is proposed (DESIGN.md, point 5).
For every experiment the store holds as not finished:

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

Every decision is written to the event log.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from controller.store import (
    add_event,
    experiments_in_status,
    set_experiment_status,
    set_step_status,
    transaction,
)
from controller.work import Work
from instruments.client import RequestState
from models.errors import InstrumentError, ParameterLimitError
from models.params import ParamValue
from models.status import ExperimentStatus, StepStatus
from models.tables import StepRow

if TYPE_CHECKING:
    from controller.loop import CampaignController

logger = logging.getLogger(__name__)


class Recovery:
    """Reconciles a campaign's unfinished experiments at controller start.

    Args:
        ctl: The controller, connected to its instruments, gate built.
    """

    def __init__(self, ctl: CampaignController) -> None:
        self.ctl = ctl
        self.summary: dict[str, int] = {}

    def _count(self, what: str) -> None:
        self.summary[what] = self.summary.get(what, 0) + 1

    async def reconcile(self) -> dict[str, int]:
        """Reconcile every unfinished experiment; returns counts of what was done."""

        ctl = self.ctl
        assert ctl.gate is not None
        with transaction(ctl._sessions) as s:
            rows = experiments_in_status(
                s,
                ctl.campaign_id,
                [ExperimentStatus.PROPOSED, ExperimentStatus.QUEUED, ExperimentStatus.RUNNING],
            )
            plan: list[tuple[int, ExperimentStatus, dict[str, ParamValue], list[StepRow]]] = [
                (r.id, r.status, dict(r.parameters), list(r.steps)) for r in rows
            ]
            for row in rows:
                s.expunge(row)
            for _, _, _, steps in plan:
                for st in steps:
                    s.expunge(st)
        for exp_id, status, point, steps in plan:
            if status == ExperimentStatus.PROPOSED:
                self._gate_proposed(exp_id, point)
                continue
            active = [st for st in steps if st.status in (StepStatus.QUEUED, StepStatus.RUNNING)]
            done = {st.index for st in steps if st.status == StepStatus.COMPLETED}
            ctl._in_flight[exp_id] = point
            if active:
                await self._reconcile_step(exp_id, point, active[-1])
                continue
            nxt = max(done) + 1 if done else 0
            if nxt >= len(ctl.spec.workflow):
                # every step done but the experiment never closed: close it from the store
                self._count("closed")
                ctl._in_flight.pop(exp_id, None)
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
            ctl._ready[ctl.spec.workflow[nxt].kind].append(work)
        if self.summary:
            with transaction(ctl._sessions) as s:
                add_event(
                    s,
                    "recovery.done",
                    "reconciled unfinished experiments: "
                    + ", ".join(f"{k} {v}" for k, v in sorted(self.summary.items())),
                    campaign_id=ctl.campaign_id,
                    data=self.summary,
                )
        return self.summary

    def _gate_proposed(self, exp_id: int, point: dict[str, ParamValue]) -> None:
        from models.tables import ExperimentRow

        ctl = self.ctl
        assert ctl.gate is not None
        with transaction(ctl._sessions) as s:
            exp = s.get(ExperimentRow, exp_id)
            assert exp is not None
            try:
                clean = ctl.gate.check_proposal(point)
            except ParameterLimitError as exc:
                ctl._refuse(s, exp, exc)
                self._count("refused")
                return
            if ctl.spec.safety.require_approval:
                ctl._in_flight[exp_id] = clean
                ctl._status[exp_id] = ExperimentStatus.PROPOSED
                ctl._awaiting[exp_id] = clean
                self._count("awaiting approval")
                return
            set_experiment_status(s, exp, ExperimentStatus.QUEUED)
        ctl._in_flight[exp_id] = clean
        ctl._status[exp_id] = ExperimentStatus.QUEUED
        ctl._ready[ctl.spec.workflow[0].kind].append(Work(exp_id, 0, clean))
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
            self._log(exp_id, step, f"request {step.request_id} is {state.state} at {slot.name}")
            self._count("collected" if state.terminal else "adopted")
            return
        if step.status == StepStatus.QUEUED and slot is not None:
            # Written but never accepted: sending it now with the same id cannot duplicate it.
            slot.resume.append(work)
            self._log(exp_id, step, f"request {step.request_id} never reached {step.instrument}")
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
            ctl.rerun(work, f"{where} does not know request {step.request_id}")
            self._count("rerun")
            return
        with transaction(ctl._sessions) as s:
            row = s.get(StepRow, step.id)
            assert row is not None
            set_step_status(s, row, StepStatus.INTERRUPTED, error="fate unknown after restart")
            set_experiment_status(
                s,
                row.experiment,
                ExperimentStatus.INTERRUPTED,
                reason="step fate unknown; not re-runnable",
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
        ctl._in_flight.pop(exp_id, None)
        self._count("interrupted")

    def _log(self, exp_id: int, step: StepRow, message: str) -> None:
        logger.info("recovery: experiment %d step %d: %s", exp_id, step.index, message)
        with transaction(self.ctl._sessions) as s:
            add_event(
                s,
                "recovery.step",
                message,
                campaign_id=self.ctl.campaign_id,
                experiment_id=exp_id,
                instrument=step.instrument,
                data={"request_id": step.request_id, "step_status": step.status},
            )
