"""The campaign event loop: keep every instrument busy, record everything first.

One :class:`CampaignController` runs one campaign. It is a plain object (the Ray actor in
:mod:`controller.actors` wraps it) whose constructor rebuilds its state from the store, so
a restarted controller carries on where the store says the campaign is.

How an experiment flows (DESIGN.md, "The loop"):

1. An instrument of the first workflow step's kind is free and nothing is waiting for it:
   the planner is asked for as many proposals as there are free instruments, told which
   experiments are still pending. The decision and the experiments are written (PROPOSED),
   then each passes the safety gate (QUEUED) or is refused (ABANDONED, the planner is told
   the point is infeasible).
2. A step is written with its request id (derived from the experiment) *before* it is sent.
   The instrument acknowledges it; a short action answers in the same round trip.
3. The result is written with the step, the experiment moves on to its next step (on an
   instrument of that step's kind) or is COMPLETED and the planner is told.

Planning happens in another process (or thread) while the loop goes on dispatching.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Coroutine, Mapping
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from controller.alarms import Alarms
from controller.costs import CostLedger
from controller.estop import EmergencyStop
from controller.health import HealthMonitor
from controller.intake import ProposalIntake
from controller.leasing import CampaignLease
from controller.operator import OperatorCommands
from controller.planning import (
    PlannerClient,
    RayPlanner,
    StoreRef,
    ThreadPlanner,
    build_planner,
)
from controller.recovery import Recovery
from controller.safety import SafetyGate
from controller.scheduling import Dispatcher
from controller.store import (
    add_event,
    count_by_status,
    get_campaign,
    make_engine,
    migrate,
    session_factory,
    set_campaign_status,
    set_experiment_status,
    transaction,
)
from controller.store.queries import (
    PENDING_EXPERIMENT,
    experiment_costs,
    related_observations,
)
from controller.work import ControllerOptions, InstrumentSlot, Work
from instruments.client import InstrumentClient
from instruments.security import CurveClientKeys
from models.campaign import CampaignSpec
from models.errors import (
    CampaignStateError,
    InstrumentError,
    ParameterLimitError,
)
from models.params import ParamValue
from models.status import CampaignStatus, ExperimentStatus
from models.tables import CampaignRow, ExperimentRow

logger = logging.getLogger(__name__)


class CampaignController(ProposalIntake):
    """Runs one campaign stored in the database to its budget.

    Args:
        db_url: SQLAlchemy URL of the store.
        campaign_name: The campaign (must exist in the store).
        endpoints: Instrument addresses that override the campaign file's (simulated
            instruments started on free ports).
        options: Controller settings.

    Raises:
        CampaignStateError: If the campaign is not in the store.
    """

    def __init__(
        self,
        db_url: str,
        campaign_name: str,
        endpoints: Mapping[str, str] | None = None,
        options: ControllerOptions | None = None,
    ) -> None:
        self.options = options or ControllerOptions()
        self._db_url = db_url
        self._engine = make_engine(db_url)
        migrate(self._engine)
        self._sessions: sessionmaker[Session] = session_factory(self._engine)
        with transaction(self._sessions) as s:
            row = get_campaign(s, campaign_name)
            if row is None:
                raise CampaignStateError(f"campaign {campaign_name!r} is not in the store")
            self.campaign_id = row.id
            self.uid = row.uid
            self.seed = row.seed
            self.budget = row.max_experiments
            self.spec = CampaignSpec.model_validate(row.spec)
            counts = count_by_status(s, row.id)
            costs = experiment_costs(s, row.id)
        # The cost spent is recomputed from what the store recorded (see controller.costs).
        self.ledger = CostLedger(
            self.spec.budget.max_cost,
            sum(c for st, c in costs.values() if st == ExperimentStatus.COMPLETED),
            {i: c for i, (st, c) in costs.items() if st in PENDING_EXPERIMENT},
        )
        self.name = campaign_name
        self.max_failures = self.spec.budget.max_failures or self.budget
        self._completed = counts.get(ExperimentStatus.COMPLETED, 0)
        self._failed = counts.get(ExperimentStatus.FAILED, 0)
        self._abandoned = counts.get(ExperimentStatus.ABANDONED, 0)
        self._in_flight: dict[int, dict[str, ParamValue]] = {}
        self._ready: dict[str, deque[Work]] = {}
        endpoints = dict(endpoints or {})
        self.instruments: dict[str, InstrumentSlot] = {}
        for inst in self.spec.instruments:
            address = endpoints.get(inst.name, inst.address)
            if address is None:
                raise CampaignStateError(f"instrument {inst.name!r} has no address")
            curve = CurveClientKeys.for_instrument(inst)
            client = InstrumentClient(
                address,
                name=inst.name,
                timeout_s=self.options.rpc_timeout_s,
                curve=curve,
                insecure=inst.insecure,
            )
            self.instruments[inst.name] = InstrumentSlot(
                inst.name, inst.kind, address, client, curve=curve, insecure=inst.insecure
            )
        self._timeouts = {i.name: i.timeout_s for i in self.spec.instruments}
        self.gate: SafetyGate | None = None
        self._planner: PlannerClient | None = None
        self._planning = False
        self._planner_errors = 0
        self._changed: asyncio.Condition | None = None  # made in run(), on the loop
        self._paused = False
        self._stop_reason: str | None = None
        self._final: CampaignStatus | None = None
        self._background: set[asyncio.Task[None]] = set()
        # Status of every experiment in flight, as last written (the store's writes are
        # compare-and-set against it), and the measurements of the earlier steps of
        # multi-step experiments still in flight.
        self._status: dict[int, ExperimentStatus] = {}
        self._earlier: dict[int, dict[str, float]] = {}
        # Experiments written and cleared by the gate, waiting for an operator's approval.
        self._awaiting: dict[int, dict[str, ParamValue]] = {}
        self.alarms = Alarms(
            self.spec.alarms,
            campaign_name,
            self.campaign_id,
            self._sessions,
            self._spawn,
            backoff_s=self.spec.reliability.backoff_s or 1.0,
        )
        self.health: HealthMonitor | None = None  # made in run(), on the loop
        self.commands = OperatorCommands(self)
        self.estop = EmergencyStop(self)
        self.lease = CampaignLease(
            self._sessions, self.campaign_id, self.options.lease_s, self._lease_lost
        )
        self._workers: list[asyncio.Task[None]] = []
        self.dispatch = Dispatcher(self)
        # Completed + failed + abandoned when the planner last had nothing to propose: it
        # is asked again only once one of them has changed.
        self._exhausted_at: int | None = None
        # The last known_seq taught to the planner (see StepRunner._teach), and the
        # proposals refused in a row (see ProposalIntake._refused).
        self._known_seq = 0
        self._refused_in_a_row = 0

    # ------------------------------------------------------------------ public API

    async def run(self) -> dict[str, Any]:
        """Run the campaign until its budget is reached or it is stopped.

        Returns:
            The final progress (see :meth:`progress`).

        Raises:
            LeaseHeldError: If another controller is running the campaign.
            InvalidCampaignError: If the instruments cannot run the workflow.
            InstrumentError: If no instrument of a needed kind can be reached.
        """
        self.lease.acquire()  # before anything is read for sending, let alone sent
        try:
            return await self._run_leased()
        finally:
            self.lease.release()

    async def _run_leased(self) -> dict[str, Any]:
        self._changed = asyncio.Condition()
        self._spawn(self.lease.keep())
        self.alarms.redeliver_pending()
        self._planner = self._make_planner()  # starts loading its models while we connect
        workers: list[asyncio.Task[None]] = []
        try:
            await self._connect()
            with transaction(self._sessions) as s:
                row = s.get(CampaignRow, self.campaign_id)
                assert row is not None
                # An operator's pause outlives the controller: a restart starts paused, and
                # an emergency stop holds (controller/estop.py).
                held = (CampaignStatus.PAUSED, CampaignStatus.ESTOPPED)
                self._paused = row.status in held
                if row.status not in (CampaignStatus.RUNNING, *held):
                    set_campaign_status(s, row, CampaignStatus.RUNNING)
                add_event(
                    s,
                    "campaign.started",
                    f"controller started: {self._completed}/{self.budget} experiments completed"
                    + (
                        "; the campaign is paused until an operator resumes it"
                        if self._paused
                        else ""
                    ),
                    campaign_id=self.campaign_id,
                    data={
                        "completed": self._completed,
                        "budget": self.budget,
                        "paused": self._paused,
                        "controller": self.lease.me.holder,
                    },
                )
                related = related_observations(
                    s,
                    self.spec.planner.options.get("related_campaigns", []),
                    list(self.spec.objectives),
                )
            for task, told in related.items():  # related campaigns first, then our own
                await self._planner.tell_related(task, told)
            await Recovery(self).reconcile()
            self.dispatch.restore()
            await self._teach()  # everything the store says the planner knows (see _teach)
            self.health = HealthMonitor(
                self.instruments,
                self.spec.reliability,
                self.campaign_id,
                self._sessions,
                self.alarms,
                self._notify,
                self._described,
            )
            self.health.write_all()
            for slot in self.instruments.values():
                self._spawn(self.health.watch(slot))
            await self.estop.restore()  # an ESTOPPED campaign stays stopped
            self._spawn(self.commands.poll_forever())
            if self.dispatch.lab is not None:
                self.health.lab_state = self.dispatch.lab_state
                self._spawn(self.dispatch.poll_lab())
            workers = self._workers = [
                asyncio.create_task(self._worker(slot), name=f"worker-{slot.name}")
                for slot in self.instruments.values()
            ]
            try:
                await asyncio.gather(*workers)
            except asyncio.CancelledError:
                if self.lease.lost is None:
                    raise
        finally:
            for w in workers:
                w.cancel()
            await _cancel_all(list(self._background))
            self._planner.close()
            for slot in self.instruments.values():
                await slot.client.close()
        self._finish()
        return self.progress()

    def progress(self) -> dict[str, Any]:
        """Counts the progress bar and the operator need."""
        return {
            "campaign": self.name,
            "budget": self.budget,
            "completed": self._completed,
            "failed": self._failed,
            "abandoned": self._abandoned,
            "in_flight": len(self._in_flight),
            "awaiting_approval": len(self._awaiting),
            "paused": self._paused,
            "status": (self._final or CampaignStatus.RUNNING).value,
            "stop_reason": self._stop_reason,
            "cost_spent": self.ledger.spent(self._in_flight),
            "max_cost": self.ledger.max_cost,
            "waiting": {str(e): why for e, why in sorted(self.dispatch.waiting.items())},
            "held": self.dispatch.manager.held(),
        }

    async def pause(self, actor: str = "operator") -> None:
        """Stop starting new steps; steps already sent finish and are recorded."""
        await self._set_paused(True, actor)

    async def resume(self, actor: str = "operator") -> None:
        """Undo :meth:`pause`."""
        await self._set_paused(False, actor)

    async def _set_paused(self, paused: bool, actor: str) -> None:
        with transaction(self._sessions) as s:
            row = s.get_one(CampaignRow, self.campaign_id)
            target = CampaignStatus.PAUSED if paused else CampaignStatus.RUNNING
            set_campaign_status(s, row, target, actor=actor)
        self._paused = paused
        await self._notify()

    async def abort(self, actor: str = "operator") -> None:
        """Start nothing more; the campaign ends ABORTED once the steps already sent are
        recorded. Experiments waiting for an instrument are ABANDONED."""
        self._stop(CampaignStatus.ABORTED, f"aborted by {actor}")
        waiting = [w for q in self._ready.values() for w in q]
        waiting += [Work(i, 0, p) for i, p in self._awaiting.items()]
        self._awaiting.clear()
        for q in self._ready.values():
            q.clear()
        if waiting:
            with transaction(self._sessions) as s:
                for work in waiting:
                    self._move(s, work, ExperimentStatus.ABANDONED, f"campaign aborted by {actor}")
                add_event(
                    s,
                    "campaign.abort",
                    f"{len(waiting)} waiting experiments abandoned",
                    campaign_id=self.campaign_id,
                    actor=actor,
                    data={"experiments": [w.experiment_id for w in waiting]},
                )
            for work in waiting:
                self._forget(work)
            self._abandoned += len(waiting)
        await self._notify()

    async def approve(self, experiment_ids: list[int], actor: str) -> list[int]:
        """Let experiments that wait for approval run; returns those approved.

        Raises:
            CampaignStateError: If one of them is not waiting for approval (none is approved).
        """
        self._check_awaiting(experiment_ids)
        with transaction(self._sessions) as s:
            for exp_id in experiment_ids:
                point = self._awaiting.pop(exp_id)
                work = Work(exp_id, 0, point)
                self._move(s, work, ExperimentStatus.QUEUED, f"approved by {actor}")
                self._ready[self.spec.workflow[0].kind].append(work)
        await self._notify()
        return experiment_ids

    async def reject(self, experiment_ids: list[int], actor: str, reason: str) -> list[int]:
        """Abandon experiments that wait for approval; the planner learns they are infeasible.

        Raises:
            CampaignStateError: If one of them is not waiting for approval (none is rejected).
        """
        self._check_awaiting(experiment_ids)
        with transaction(self._sessions) as s:
            for exp_id in experiment_ids:
                work = Work(exp_id, 0, self._awaiting.pop(exp_id))
                self._move(
                    s,
                    work,
                    ExperimentStatus.ABANDONED,
                    f"rejected by {actor}: {reason}",
                    infeasible=True,
                )
                self._forget(work)
        self._abandoned += len(experiment_ids)
        await self._teach()
        await self._notify()
        return experiment_ids

    def _check_awaiting(self, experiment_ids: list[int]) -> None:
        if not experiment_ids:
            raise CampaignStateError("experiments: no experiment named")
        unknown = [i for i in experiment_ids if i not in self._awaiting]
        if unknown:
            raise CampaignStateError(f"experiments: {unknown} are not waiting for approval")

    async def resolve(self, experiment_id: int, action: str, actor: str) -> str:
        """An operator's decision on an INTERRUPTED experiment: ``"rerun"`` or ``"fail"``.

        Raises:
            CampaignStateError: If the experiment is not INTERRUPTED in this campaign.
        """
        with transaction(self._sessions) as s:
            exp = s.get(ExperimentRow, experiment_id)
            if exp is None or exp.campaign_id != self.campaign_id:
                raise CampaignStateError(f"experiment: no experiment {experiment_id} here")
            if exp.status != ExperimentStatus.INTERRUPTED:
                raise CampaignStateError(
                    f"experiment: {experiment_id} is {exp.status.value}, not INTERRUPTED"
                )
            point = dict(exp.parameters)
            last = max(exp.steps, key=lambda st: (st.index, st.attempt), default=None)
            index = last.index if last is not None else 0
            attempt = last.attempt + 1 if last is not None else 1
        work = Work(
            experiment_id, index, point, attempt, True, reason=f"{actor} decided to run it again"
        )
        with transaction(self._sessions) as s:
            self._status[experiment_id] = ExperimentStatus.INTERRUPTED
            if action == "rerun":
                self._move(s, work, ExperimentStatus.QUEUED, f"{actor} decided to run it again")
            else:
                self._move(s, work, ExperimentStatus.FAILED, f"{actor} decided it failed")
        if action == "rerun":
            self._in_flight[experiment_id] = point
            self._ready[self.spec.workflow[index].kind].appendleft(work)
            await self._notify()
            return f"experiment {experiment_id} step {index} runs again as attempt {attempt}"
        self._status.pop(experiment_id, None)
        self._failed += 1
        await self._teach()
        return f"experiment {experiment_id} marked FAILED"

    # ------------------------------------------------------------------ start-up

    def _described(self, slot: InstrumentSlot) -> None:
        """An instrument unreachable at start answered: let the safety gate know its limits."""
        descriptions = {n: s.description for n, s in self.instruments.items() if s.description}
        old = self.gate
        self.gate = SafetyGate(self.spec, descriptions)
        if old is not None:
            self.gate.carry_history(old)  # rate limits keep what was sent so far

    def _make_planner(self) -> PlannerClient:
        if self.options.use_ray_planner:
            # A restarted planner actor reads the campaign's history back from the store.
            store = StoreRef.for_campaign(self._db_url, self.campaign_id)
            return RayPlanner(self.spec, self.seed, store)
        return ThreadPlanner(build_planner(self.spec, self.seed))

    async def _connect(self) -> None:
        deadline = time.monotonic() + self.options.connect_timeout_s
        problems: dict[str, InstrumentError] = {}

        async def describe(slot: InstrumentSlot) -> None:
            while True:
                try:
                    slot.description = await slot.client.describe()
                    slot.silent = False
                    slot.last_seen = time.monotonic()
                    return
                except InstrumentError as exc:
                    problems[slot.name] = exc  # what happened, for the event
                    if time.monotonic() > deadline:
                        logger.warning("instrument %s unreachable: %s", slot.name, exc)
                        return  # UNKNOWN: its heartbeats will tell when it answers
                    await asyncio.sleep(0.2)

        await asyncio.gather(*(describe(s) for s in self.instruments.values()))
        up = {n: s.description for n, s in self.instruments.items() if s.description}
        with transaction(self._sessions) as s:
            for slot in self.instruments.values():
                if slot.description is None:
                    add_event(
                        s,
                        "instrument.unreachable",
                        f"{slot.name} at {slot.address}: "
                        f"{problems.get(slot.name) or 'no reply to describe'}",
                        campaign_id=self.campaign_id,
                        instrument=slot.name,
                    )
                else:
                    add_event(
                        s,
                        "instrument.connected",
                        f"{slot.name} ({slot.description.driver} {slot.description.driver_version})"
                        f" at {slot.address}",
                        campaign_id=self.campaign_id,
                        instrument=slot.name,
                        data=slot.description.model_dump(mode="json"),
                    )
        for i, step in enumerate(self.spec.workflow):
            if not any(s.kind == step.kind and s.description for s in self.instruments.values()):
                raise InstrumentError(
                    "|".join(n for n, s in self.instruments.items() if s.kind == step.kind),
                    "unreachable",
                    f"no instrument of kind {step.kind!r} (workflow[{i}]) answered within "
                    f"{self.options.connect_timeout_s:.0f} s",
                )
        self.gate = SafetyGate(self.spec, {k: v for k, v in up.items() if v is not None})
        self._ready = {step.kind: deque() for step in self.spec.workflow}

    # ------------------------------------------------------------------ scheduling

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    def _stop(self, status: CampaignStatus, reason: str) -> None:
        if self._final is None:
            self._final = status
            self._stop_reason = reason
            logger.info("campaign %s stopping: %s", self.name, reason)

    async def _lease_lost(self, reason: str) -> None:
        """Stop at once: another controller may be driving the campaign now.

        Steps in flight are left to the controller that holds the lease (its recovery
        collects them); nothing more is written about the campaign's status.
        """
        self._stop(CampaignStatus.FAILED, f"controller fenced: {reason}")
        self.alarms.raise_(
            "controller_fenced",
            f"this controller (process {self.lease.me.pid} on {self.lease.me.host}) stopped "
            f"sending: {reason}",
            data={"holder": self.lease.me.holder},
        )
        for task in self._workers:
            task.cancel()

    def _may_start_new(self) -> bool:
        return (
            self.lease.valid
            and self._final is None
            and not self._paused
            and self._completed + len(self._in_flight) < self.budget
        )

    def _finished(self) -> bool:
        if self._final is None and self._completed >= self.budget:
            self._stop(CampaignStatus.COMPLETED, "budget reached")
        return self._final is not None and not self._in_flight

    async def _next_work(self, slot: InstrumentSlot) -> Work | None:
        """The next step for ``slot``, its resources granted (see :mod:`controller.scheduling`)."""
        assert self._changed is not None
        first_kind = self.spec.workflow[0].kind
        async with self._changed:
            while True:
                if self._finished():
                    self._changed.notify_all()
                    return None
                if slot.available:
                    work = self.dispatch.take(slot)
                    if work is not None:
                        return work
                    if slot.kind == first_kind:
                        self._maybe_plan()
                await self._changed.wait()

    async def _worker(self, slot: InstrumentSlot) -> None:
        while True:
            work = await self._next_work(slot)
            if work is None:
                return
            slot.busy = True
            self._maybe_plan()  # keep the prefetch queue filled while this step runs
            try:
                await self._execute(slot, work)
            except Exception:  # one bad step must never stop the campaign
                logger.exception("step of experiment %d failed unexpectedly", work.experiment_id)
                self._fail_experiment(work, None, "internal", "controller error; see log")
            finally:
                slot.busy = False
                self.dispatch.step_done(slot, work)
                await self._notify()

    def _refuse(self, s: Session, exp: ExperimentRow, exc: ParameterLimitError) -> None:
        """Abandon an experiment the safety gate refused (cold paths: ORM row at hand)."""
        set_experiment_status(
            s, exp, ExperimentStatus.ABANDONED, reason=f"safety gate: {exc}", infeasible=True
        )
        self._log_refusal(s, exp.id, exc)
        self._refused(str(exc))

    # ------------------------------------------------------------------ shutdown

    def _finish(self) -> None:
        final = self._final or CampaignStatus.COMPLETED
        if self.lease.lost is not None:
            self._final = final
            return  # the campaign's status belongs to the controller that holds the lease
        if self.health is not None:
            self.health.write_all()
        self.dispatch.waiting = {}
        self.dispatch.flush()
        with transaction(self._sessions) as s:
            row = s.get(CampaignRow, self.campaign_id)
            assert row is not None
            if row.status == CampaignStatus.ESTOPPED and final != CampaignStatus.ABORTED:
                final = CampaignStatus.ESTOPPED  # it holds until an operator resets it
            if row.status == CampaignStatus.PAUSED and final != CampaignStatus.ABORTED:
                set_campaign_status(s, row, CampaignStatus.RUNNING)
            if row.status != final:
                set_campaign_status(s, row, final, reason=self._stop_reason)
            add_event(
                s,
                "campaign.stopped",
                f"{final.value}: {self._stop_reason}; {self._completed} completed, "
                f"{self._failed} failed, {self._abandoned} abandoned",
                campaign_id=self.campaign_id,
                data=self.progress(),
            )
        self._final = final

    def dispose(self) -> None:
        """Close the database engine."""
        self._engine.dispose()


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended.

    A cancellation can be lost (Python 3.11's ``asyncio.wait_for`` swallows one that
    arrives as the awaited call completes, and code outside sdlab may catch one), and the
    task then runs on: a heartbeat loop would run forever. Tasks still alive after a moment
    are cancelled again.
    """
    pending = [t for t in tasks if not t.done()]
    while pending:
        for task in pending:
            task.cancel()
        _, still = await asyncio.wait(pending, timeout=1.0)
        pending = list(still)
        if pending:
            logger.warning(
                "%d background task(s) ignored a cancellation; cancelling again", len(pending)
            )
