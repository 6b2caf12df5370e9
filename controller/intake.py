"""Asking the planner and taking its proposals in: the safety gate, costs, approval.

When instruments of the workflow's first kind wait (or the prefetch queue runs short) the
controller asks the planner for as many proposals as there are free instruments, telling it
which experiments are still pending (asynchronous batch Bayesian optimisation). The decision
and its experiments are written first (PROPOSED); each then passes the safety gate and the
cost budget (QUEUED), waits for an operator's approval, or is refused (ABANDONED, and the
planner told the point is infeasible). A planner may propose fewer experiments than asked,
or none: with none and nothing in flight the campaign is COMPLETED with the planner's reason
(``details["finished"]``).

:class:`ProposalIntake` is the part of :class:`~controller.loop.CampaignController` that does
this; the attributes it declares are the controller's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from controller.costs import experiment_cost
from controller.leasing import CampaignLease
from controller.steps import StepRunner
from controller.store import add_event, transaction
from controller.store.hot import insert_decision
from controller.store.queries import COST_KEY
from controller.work import InstrumentSlot, Work
from models.errors import InvalidCampaignError, ParameterLimitError
from models.params import ParamValue
from models.records import Proposal
from models.status import CampaignStatus, ExperimentStatus

logger = logging.getLogger(__name__)


class ProposalIntake(StepRunner):
    """Plans and gates new experiments (mixed into the campaign controller)."""

    name: str
    budget: int
    lease: CampaignLease
    instruments: dict[str, InstrumentSlot]
    _planning: bool
    _paused: bool
    _planner_errors: int
    _exhausted_at: int | None
    _awaiting: dict[int, dict[str, ParamValue]]
    _refused_in_a_row: int

    def _may_start_new(self) -> bool:
        """Whether new experiments may be started (the controller decides)."""
        raise NotImplementedError

    def _idle_first_kind(self) -> int:
        kind = self.spec.workflow[0].kind
        return sum(
            1
            for s in self.instruments.values()
            if s.kind == kind and s.available and not s.busy and not s.resume
        )

    def _maybe_plan(self) -> None:
        """Start planning when first-step instruments wait, or the prefetch queue runs short.

        Asks for one proposal per idle instrument of the first step's kind, plus
        ``planner.prefetch`` kept ready so that a freed instrument need not wait for the
        planner; only one planning call runs at a time.
        """
        if self._planning or self._paused or not self._may_start_new():
            return
        if self._exhausted_at == self._completed + self._failed + self._abandoned:
            return  # the planner had nothing more; nothing it learns from has changed
        queue = self._ready[self.spec.workflow[0].kind]
        want = (
            self._idle_first_kind() + self.spec.planner.prefetch - len(queue) - len(self._awaiting)
        )
        if want > 0:
            self._planning = True
            self._spawn(self._plan(want))

    async def _plan(self, want: int) -> None:
        """Ask the planner for ``want`` experiments (fewer if the budget has less room)."""
        assert self._planner is not None
        assert self.gate is not None
        try:
            room = self.budget - self._completed - len(self._in_flight)
            n = max(1, min(want, room))
            seen = self._completed + self._failed + self._abandoned
            pending = list(self._in_flight.values())
            try:
                await self._teach()  # the planner knows what the store says it knows
                decision = await self._planner.ask(n, pending)
                self._planner_errors = 0
            except Exception as exc:
                self._planner_errors += 1
                logger.exception("planner failed (%d in a row)", self._planner_errors)
                with transaction(self._sessions) as s:
                    add_event(
                        s,
                        "planner.error",
                        f"{type(exc).__name__}: {exc}",
                        campaign_id=self.campaign_id,
                    )
                if self._planner_errors >= self.options.max_planner_errors:
                    self._stop(CampaignStatus.FAILED, f"planner failed: {exc}")
                else:
                    await asyncio.sleep(0.5 * 2**self._planner_errors)
                return
            proposals = list(decision.proposals[:room])
            if self.lease.lost is not None:
                return  # another controller owns the campaign now: write nothing
            if not proposals:
                self._planner_exhausted(decision.details, seen)
            costs = self._proposal_costs(proposals)
            decision = dataclasses.replace(decision, details={**decision.details, COST_KEY: costs})
            if self._final is not None:
                # The campaign began to stop while the planner worked: the decision is
                # recorded, its proposals are abandoned, nothing new is queued.
                late = f"campaign {self._final.value} before it was queued"
                with transaction(self._sessions) as s:
                    insert_decision(
                        s,
                        self.campaign_id,
                        decision,
                        [],
                        [(k, p, late) for k, p in enumerate(proposals)],
                    )
                self._abandoned += len(proposals)
                return
            accepted: list[tuple[int, Proposal, dict[str, ParamValue]]] = []
            refusals: list[tuple[int, Proposal, ParameterLimitError]] = []
            over: list[tuple[int, Proposal, str]] = []
            committed = self.ledger.spent(self._in_flight)
            for k, prop in enumerate(proposals):
                try:
                    point = self.gate.check_proposal(prop.parameters)
                except ParameterLimitError as exc:
                    refusals.append((k, prop, exc))
                    continue
                cost = costs[k] or 0.0
                if over or not self.ledger.allows(committed + cost):
                    reason = f"{committed:g} committed + {cost:g} > {self.ledger.max_cost:g}"
                    over.append((k, prop, f"cost budget: {reason}"))
                    continue
                committed += cost
                accepted.append((k, prop, point))
            hold = self.spec.safety.require_approval
            with transaction(self._sessions) as s:
                _, ids = insert_decision(
                    s,
                    self.campaign_id,
                    decision,
                    accepted,
                    [(k, p, f"safety gate: {why}") for k, p, why in refusals] + over,
                    hold=hold,
                    infeasible={k for k, _, _ in refusals},
                )
                if over:
                    add_event(
                        s,
                        "campaign.cost_budget",
                        f"cost budget reached: {committed:g} of {self.ledger.max_cost:g} spent "
                        f"or committed; {len(over)} proposals abandoned",
                        campaign_id=self.campaign_id,
                        data={
                            "spent": committed,
                            "max_cost": self.ledger.max_cost,
                            "experiments": [ids[k] for k, _, _ in over],
                        },
                    )
                for k, _, why in refusals:
                    self._log_refusal(s, ids[k], why)
                if hold and accepted:
                    add_event(
                        s,
                        "approval.needed",
                        f"experiments {[ids[k] for k, _, _ in accepted]} wait for an "
                        "operator's approval",
                        campaign_id=self.campaign_id,
                        data={"experiments": [ids[k] for k, _, _ in accepted]},
                    )
            for k, _, point in accepted:
                exp_id = ids[k]
                self._in_flight[exp_id] = point
                self.ledger.record(exp_id, costs[k] or 0.0)
                if hold:
                    self._status[exp_id] = ExperimentStatus.PROPOSED
                    self._awaiting[exp_id] = point
                else:
                    self._status[exp_id] = ExperimentStatus.QUEUED
                    self._ready[self.spec.workflow[0].kind].append(Work(exp_id, 0, point))
            self._abandoned += len(over)
            if over:
                self._stop(CampaignStatus.COMPLETED, "cost budget reached")
            for _, _, why in refusals:
                self._refused(str(why))
            if refusals:
                await self._teach()
        finally:
            self._planning = False
            await self._notify()

    def _refused(self, message: str) -> None:
        """Count a proposal the safety gate refused; stop the campaign after
        ``reliability.max_refused_in_a_row`` in a row (it cannot make progress).

        The streak ends when an experiment's first step is sent (see
        :meth:`~controller.steps.StepRunner._execute`).
        """
        self._refused_in_a_row += 1
        limit = self.spec.reliability.max_refused_in_a_row
        if self._refused_in_a_row < limit or self._final is not None:
            return
        reason = (
            f"no progress: the last {self._refused_in_a_row} proposals were all refused "
            f"by the safety gate; last refusal: {message}"
        )
        self.alarms.raise_(
            "no_progress",
            f"campaign {self.name} stopped: {reason}",
            data={"refused_in_a_row": self._refused_in_a_row, "last_refusal": message},
        )
        self._stop(CampaignStatus.FAILED, reason)

    def _proposal_costs(self, proposals: list[Proposal]) -> list[float | None]:
        """The cost of each proposal (``None`` where it cannot be computed: the point is
        refused by the gate anyway)."""
        descriptions = {n: slot.description for n, slot in self.instruments.items()}
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
        self._exhausted_at = seen
        logger.info("campaign %s: the planner proposed nothing: %s", self.name, why)
        if not self._in_flight:
            self._stop(CampaignStatus.COMPLETED, why)
