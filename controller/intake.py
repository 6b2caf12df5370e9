"""Asking the planner and taking its proposals in: the safety gate, costs, approval.

When instruments of the workflow's first kind wait (or the prefetch queue runs short) the
controller asks the planner for as many proposals as there are free instruments, telling it
which experiments are still pending (asynchronous batch Bayesian optimisation). The decision
and its experiments are written first (PROPOSED); each then passes the safety gate and the
cost budget (QUEUED), waits for an operator's approval, or is refused (ABANDONED, and the
planner told the point is infeasible). A planner may propose fewer experiments than asked,
or none: with none and nothing in flight the campaign is COMPLETED with the planner's reason
(``details["finished"]``).

:class:`ProposalIntake` does this for the campaign controller, through the campaign's
:class:`~controller.book.Book` and :class:`~controller.writer.Writer`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from controller.book import Book
from controller.costs import experiment_cost
from controller.steps import StepRunner
from controller.store.queries import COST_KEY
from controller.work import Lifecycle, Work
from controller.writer import Writer
from models.errors import InvalidCampaignError, ParameterLimitError
from models.params import ParamValue
from models.records import Decision, Proposal
from models.status import CampaignStatus, ExperimentStatus

logger = logging.getLogger(__name__)


class ProposalIntake:
    """Plans and gates new experiments.

    Args:
        ctl: The controller (its spec, gate, planner, instruments and lifecycle).
        book: The campaign's in-flight state.
        writer: The campaign's writer.
        steps: The step runner (it teaches the planner and keeps the refusal streak).
    """

    def __init__(self, ctl: Lifecycle, book: Book, writer: Writer, steps: StepRunner) -> None:
        self.ctl = ctl
        self.book = book
        self.writer = writer
        self.steps = steps
        self.spec = ctl.spec
        self.planning = False
        self.planner_errors = 0
        # Completed + failed + abandoned when the planner last had nothing to propose: it
        # is asked again only once one of them has changed.
        self.exhausted_at: int | None = None

    def _idle_first_kind(self) -> int:
        kind = self.spec.workflow[0].kind
        return sum(
            1
            for s in self.ctl.instruments.values()
            if s.kind == kind and s.available and not s.busy and not s.resume
        )

    def maybe_plan(self) -> None:
        """Start planning when first-step instruments wait, or the prefetch queue runs short.

        Asks for one proposal per idle instrument of the first step's kind, plus
        ``planner.prefetch`` kept ready so that a freed instrument need not wait for the
        planner; only one planning call runs at a time.
        """
        if self.planning or self.ctl.paused or not self.ctl.may_start_new():
            return
        if self.exhausted_at == self.book.seen:
            return  # the planner had nothing more; nothing it learns from has changed
        want = (
            self._idle_first_kind()
            + self.spec.planner.prefetch
            - self.book.first_queue_length()
            - len(self.book.awaiting)
        )
        if want > 0:
            self.planning = True
            self.ctl.spawn(self.plan(want))

    async def plan(self, want: int) -> None:
        """Ask the planner for ``want`` experiments (fewer if the budget has less room)."""
        ctl, book = self.ctl, self.book
        assert ctl.planner is not None
        try:
            room = ctl.budget - book.completed - len(book.in_flight)
            n = max(1, min(want, room))
            seen = book.seen
            try:
                # the planner knows what the store says it knows, and is told the rest as
                # pending: an experiment that ended during the teach is in neither otherwise
                await self.steps.teach_all()
                pending = list(book.in_flight.values())
                decision = await ctl.planner.ask(n, pending)
                self.planner_errors = 0
            except Exception as exc:
                self.planner_errors += 1
                logger.exception("planner failed (%d in a row)", self.planner_errors)
                failure = f"{type(exc).__name__}: {exc}"
                await self.writer.run(lambda s: self.writer.event(s, "planner.error", failure))
                if self.planner_errors >= ctl.options.max_planner_errors:
                    ctl.stop(CampaignStatus.FAILED, f"planner failed: {exc}")
                else:
                    await asyncio.sleep(0.5 * 2**self.planner_errors)
                return
            proposals = list(decision.proposals[:room])
            if ctl.lease.lost is not None:
                return  # another controller owns the campaign now: write nothing
            if not proposals:
                self._planner_exhausted(decision.details, seen)
            costs = self._proposal_costs(proposals)
            decision = dataclasses.replace(decision, details={**decision.details, COST_KEY: costs})
            if ctl.final is not None:
                # The campaign began to stop while the planner worked: the decision is
                # recorded, its proposals are abandoned, nothing new is queued.
                late = f"campaign {ctl.final.value} before it was queued"
                await self.writer.run(
                    lambda s: self.writer.decision(
                        s, decision, [], [(k, p, late) for k, p in enumerate(proposals)]
                    )
                )
                book.abandoned += len(proposals)
                return
            await self._take(decision, proposals, costs)
        finally:
            self.planning = False
            await ctl.notify()

    async def _take(
        self, decision: Decision, proposals: list[Proposal], costs: list[float | None]
    ) -> None:
        """Gate the proposals, write the decision and its experiments, and queue (or hold
        for approval) those accepted."""
        ctl, book = self.ctl, self.book
        assert ctl.gate is not None
        accepted: list[tuple[int, Proposal, dict[str, ParamValue]]] = []
        refusals: list[tuple[int, Proposal, ParameterLimitError]] = []
        over: list[tuple[int, Proposal, str]] = []
        ledger = book.ledger
        committed = book.spent()
        for k, prop in enumerate(proposals):
            try:
                point = ctl.gate.check_proposal(prop.parameters)
            except ParameterLimitError as exc:
                refusals.append((k, prop, exc))
                continue
            cost = costs[k] or 0.0
            if over or not ledger.allows(committed + cost):
                reason = f"{committed:g} committed + {cost:g} > {ledger.max_cost:g}"
                over.append((k, prop, f"cost budget: {reason}"))
                continue
            committed += cost
            accepted.append((k, prop, point))
        hold = self.spec.safety.require_approval

        def write(s: Session) -> dict[int, int]:
            _, ids = self.writer.decision(
                s,
                decision,
                accepted,
                [(k, p, f"safety gate: {why}") for k, p, why in refusals] + over,
                hold=hold,
                infeasible={k for k, _, _ in refusals},
            )
            if over:
                self.writer.event(
                    s,
                    "campaign.cost_budget",
                    f"cost budget reached: {committed:g} of {ledger.max_cost:g} spent "
                    f"or committed; {len(over)} proposals abandoned",
                    data={
                        "spent": committed,
                        "max_cost": ledger.max_cost,
                        "experiments": [ids[k] for k, _, _ in over],
                    },
                )
            for k, _, why in refusals:
                self.steps.log_refusal(s, ids[k], why)
            if hold and accepted:
                self.writer.event(
                    s,
                    "approval.needed",
                    f"experiments {[ids[k] for k, _, _ in accepted]} wait for an "
                    "operator's approval",
                    data={"experiments": [ids[k] for k, _, _ in accepted]},
                )
            return ids

        ids = await self.writer.run(write)
        if ctl.final is not None and accepted:
            await self._abandon_late([(ids[k], point) for k, _, point in accepted])
            accepted = []
        for k, _, point in accepted:
            exp_id = ids[k]
            if hold:
                book.admit(exp_id, point, ExperimentStatus.PROPOSED, costs[k] or 0.0)
                book.hold(exp_id)
            else:
                book.admit(exp_id, point, ExperimentStatus.QUEUED, costs[k] or 0.0)
                book.queue(Work(exp_id, 0, point))
        book.abandoned += len(over) + len(refusals)
        if over:
            ctl.stop(CampaignStatus.COMPLETED, "cost budget reached")
        for _, _, why in refusals:
            self.steps.refused(str(why))
        if refusals:
            await self.steps.teach()

    async def _abandon_late(self, written: list[tuple[int, dict[str, ParamValue]]]) -> None:
        """The campaign began to stop while the decision was being written: its workers may
        have ended already, so the experiments just written are abandoned, never queued."""
        assert self.ctl.final is not None
        late = f"campaign {self.ctl.final.value} before it was queued"
        works = [Work(exp_id, 0, point) for exp_id, point in written]

        def write(s: Session) -> None:
            for work in works:
                self.steps.move(s, work, ExperimentStatus.ABANDONED, late)

        await self.writer.run(write)
        for work in works:
            self.steps.forget(work)
        self.book.abandoned += len(works)

    def _proposal_costs(self, proposals: list[Proposal]) -> list[float | None]:
        """The cost of each proposal (``None`` where it cannot be computed: the point is
        refused by the gate anyway)."""
        descriptions = {n: slot.description for n, slot in self.ctl.instruments.items()}
        out: list[float | None] = []
        for prop in proposals:
            try:
                out.append(experiment_cost(self.spec, descriptions, prop.parameters))
            except InvalidCampaignError:
                out.append(None)
        return out

    def _planner_exhausted(self, details: Mapping[str, Any], seen: int) -> None:
        """The planner proposed nothing: complete the campaign once nothing is in flight.

        It is not asked again until an experiment ends (``seen`` changes).
        """
        why = str(details.get("finished") or "planner has nothing more to propose")
        self.exhausted_at = seen
        logger.info("campaign %s: the planner proposed nothing: %s", self.ctl.name, why)
        if not self.book.in_flight:
            self.ctl.stop(CampaignStatus.COMPLETED, why)
