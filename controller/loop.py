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

The controller keeps the lifecycle (lease, connections, workers, pause and abort, finish).
The campaign's in-flight state is one :class:`~controller.book.Book`, and every write goes
through one :class:`~controller.writer.Writer`, which runs the transactions on a thread of
its own; the parts that plan (:class:`~controller.intake.ProposalIntake`), run steps
(:class:`~controller.steps.StepRunner`), reconcile after a restart
(:class:`~controller.recovery.Recovery`) and grant instruments
(:class:`~controller.scheduling.Dispatcher`) receive those two.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.alarms import Alarms
from controller.book import Book
from controller.decisions import OperatorDecisions
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
from controller.steps import StepRunner
from controller.store import (
    get_campaign,
    make_engine,
    migrate,
    session_factory,
    set_campaign_status,
    transaction,
)
from controller.store.queries import related_observations
from controller.work import ControllerOptions, InstrumentSlot, Work
from controller.writer import Writer
from instruments.client import InstrumentClient
from instruments.security import CurveClientKeys
from models.campaign import CampaignSpec
from models.errors import CampaignStateError, InstrumentError
from models.status import CampaignStatus, ExperimentStatus
from models.tables import CampaignRow, ExperimentRow

logger = logging.getLogger(__name__)


class CampaignController:
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
            kinds = [step.kind for step in self.spec.workflow]
            self.book = Book.from_store(s, row.id, kinds, self.spec.budget.max_cost)
        self.writer = Writer(self._sessions, self.campaign_id)
        self.name = campaign_name
        self.max_failures = self.spec.budget.max_failures or self.budget
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
        self.gate: SafetyGate | None = None
        self.planner: PlannerClient | None = None
        self._changed: asyncio.Condition | None = None  # made in run(), on the loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self.paused = False
        self.stop_reason: str | None = None
        self.final: CampaignStatus | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.alarms = Alarms(
            self.spec.alarms,
            campaign_name,
            self.campaign_id,
            self._sessions,
            self.spawn,
            backoff_s=self.spec.reliability.backoff_s or 1.0,
        )
        self.health: HealthMonitor | None = None  # made in run(), on the loop
        self.commands = OperatorCommands(self)
        self.estop = EmergencyStop(self)
        self.lease = CampaignLease(
            self._sessions, self.campaign_id, self.options.lease_s, self._lease_lost
        )
        self._workers: list[asyncio.Task[None]] = []
        self.dispatch = Dispatcher(self, self.book, self.writer)
        self.steps = StepRunner(self, self.book, self.writer)
        self.intake = ProposalIntake(self, self.book, self.writer, self.steps)
        self.decisions = OperatorDecisions(self, self.book, self.writer, self.steps)

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
        self._loop = asyncio.get_running_loop()
        self.spawn(self.lease.keep())
        self.alarms.redeliver_pending()
        self.planner = self._make_planner()  # starts loading its models while we connect
        workers: list[asyncio.Task[None]] = []
        try:
            await self._connect()
            related = await self.writer.run(self._started)
            for task, told in related.items():  # related campaigns first, then our own
                await self.planner.tell_related(task, told)
            await Recovery(self, self.book, self.writer, self.steps).reconcile()
            await self.dispatch.restore()
            await self.steps.teach()  # everything the store says the planner knows
            self.health = HealthMonitor(
                self.instruments,
                self.spec.reliability,
                self.campaign_id,
                self._sessions,
                self.alarms,
                self.notify,
                self._described,
            )
            self.health.write_all()
            for slot in self.instruments.values():
                self.spawn(self.health.watch(slot))
            await self.estop.restore()  # an ESTOPPED campaign stays stopped
            self.spawn(self.commands.poll_forever())
            if self.dispatch.lab is not None:
                self.health.lab_state = self.dispatch.lab_state
                self.spawn(self.dispatch.poll_lab())
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
            self.planner.close()
            for slot in self.instruments.values():
                await slot.client.close()
        await self._finish()
        return self.progress()

    def _started(self, s: Session) -> dict[str, Any]:
        """Mark the campaign RUNNING (unless an operator's hold outlives the controller),
        write ``campaign.started`` and read the related campaigns' observations."""
        row = s.get_one(CampaignRow, self.campaign_id)
        # An operator's pause outlives the controller: a restart starts paused, and an
        # emergency stop holds (controller/estop.py).
        held = (CampaignStatus.PAUSED, CampaignStatus.ESTOPPED)
        self.paused = row.status in held
        if row.status not in (CampaignStatus.RUNNING, *held):
            set_campaign_status(s, row, CampaignStatus.RUNNING)
        completed = self.book.completed
        self.writer.event(
            s,
            "campaign.started",
            f"controller started: {completed}/{self.budget} experiments completed"
            + ("; the campaign is paused until an operator resumes it" if self.paused else ""),
            data={
                "completed": completed,
                "budget": self.budget,
                "paused": self.paused,
                "controller": self.lease.me.holder,
            },
        )
        return related_observations(
            s,
            self.spec.planner.options.get("related_campaigns", []),
            list(self.spec.objectives),
        )

    def progress(self) -> dict[str, Any]:
        """Counts the progress bar and the operator need."""
        book = self.book
        return {
            "campaign": self.name,
            "budget": self.budget,
            "completed": book.completed,
            "failed": book.failed,
            "abandoned": book.abandoned,
            "in_flight": len(book.in_flight),
            "awaiting_approval": len(book.awaiting),
            "paused": self.paused,
            "status": (self.final or CampaignStatus.RUNNING).value,
            "stop_reason": self.stop_reason,
            "cost_spent": book.spent(),
            "max_cost": book.ledger.max_cost,
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
        target = CampaignStatus.PAUSED if paused else CampaignStatus.RUNNING
        await self.writer.run(
            lambda s: set_campaign_status(
                s, s.get_one(CampaignRow, self.campaign_id), target, actor=actor
            )
        )
        self.paused = paused
        await self.notify()

    async def abort(self, actor: str = "operator") -> None:
        """Start nothing more; the campaign ends ABORTED once the steps already sent are
        recorded. Experiments waiting for an instrument are ABANDONED."""
        self.stop(CampaignStatus.ABORTED, f"aborted by {actor}")
        waiting = self.book.drain()
        if waiting:
            why = f"campaign aborted by {actor}"

            def write(s: Session) -> None:
                for work in waiting:
                    self.steps.move(s, work, ExperimentStatus.ABANDONED, why, actor=actor)
                self.writer.event(
                    s,
                    "campaign.abort",
                    f"{len(waiting)} waiting experiments abandoned",
                    actor=actor,
                    data={"experiments": [w.experiment_id for w in waiting]},
                )

            await self.writer.run(write)
            for work in waiting:
                self.steps.forget(work)
            self.book.abandoned += len(waiting)
        await self.notify()

    async def approve(self, experiment_ids: list[int], actor: str) -> list[int]:
        """Let experiments that wait for approval run; returns those approved (see
        :meth:`controller.decisions.OperatorDecisions.approve`)."""
        return await self.decisions.approve(experiment_ids, actor)

    async def reject(self, experiment_ids: list[int], actor: str, reason: str) -> list[int]:
        """Abandon experiments that wait for approval (see
        :meth:`controller.decisions.OperatorDecisions.reject`)."""
        return await self.decisions.reject(experiment_ids, actor, reason)

    async def resolve(self, experiment_id: int, action: str, actor: str) -> str:
        """An operator's decision on an INTERRUPTED experiment (see
        :meth:`controller.decisions.OperatorDecisions.resolve`)."""
        return await self.decisions.resolve(experiment_id, action, actor)

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

        def write(s: Session) -> None:
            for slot in self.instruments.values():
                if slot.description is None:
                    self.writer.event(
                        s,
                        "instrument.unreachable",
                        f"{slot.name} at {slot.address}: "
                        f"{problems.get(slot.name) or 'no reply to describe'}",
                        instrument=slot.name,
                    )
                else:
                    self.writer.event(
                        s,
                        "instrument.connected",
                        f"{slot.name} ({slot.description.driver} {slot.description.driver_version})"
                        f" at {slot.address}",
                        instrument=slot.name,
                        data=slot.description.model_dump(mode="json"),
                    )

        await self.writer.run(write)
        for i, step in enumerate(self.spec.workflow):
            if not any(s.kind == step.kind and s.description for s in self.instruments.values()):
                raise InstrumentError(
                    "|".join(n for n, s in self.instruments.items() if s.kind == step.kind),
                    "unreachable",
                    f"no instrument of kind {step.kind!r} (workflow[{i}]) answered within "
                    f"{self.options.connect_timeout_s:.0f} s",
                )
        self.gate = SafetyGate(self.spec, {k: v for k, v in up.items() if v is not None})

    # ------------------------------------------------------------------ scheduling

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background, keeping a reference until it is done.

        May be called from the writer's thread (an alarm raised inside a write): the task
        is then started on the controller's loop.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if self._loop is None:
                coro.close()
                raise RuntimeError("spawn: the controller is not running") from None
            try:
                self._loop.call_soon_threadsafe(self._start, coro)
            except RuntimeError:  # the loop closed: a write must not fail for it
                coro.close()
                logger.warning("campaign %s: the loop has ended; %r not started", self.name, coro)
            return
        self._start(coro)

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def notify(self) -> None:
        """Wake the workers: something they wait for may have changed."""
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    def stop(self, status: CampaignStatus, reason: str) -> None:
        """Start nothing new; the campaign ends ``status`` once nothing is in flight (the
        first stop's status and reason hold)."""
        if self.final is None:
            self.final = status
            self.stop_reason = reason
            logger.info("campaign %s stopping: %s", self.name, reason)

    async def _lease_lost(self, reason: str) -> None:
        """Stop at once: another controller may be driving the campaign now.

        Steps in flight are left to the controller that holds the lease (its recovery
        collects them); nothing more is written about the campaign's status.
        """
        self.stop(CampaignStatus.FAILED, f"controller fenced: {reason}")
        self.writer.fence(reason)
        self.alarms.raise_(
            "controller_fenced",
            f"this controller (process {self.lease.me.pid} on {self.lease.me.host}) stopped "
            f"sending: {reason}",
            data={"holder": self.lease.me.holder},
        )
        for task in self._workers:
            task.cancel()

    def may_start_new(self) -> bool:
        """Whether new experiments may be started (lease held, not stopping, not paused,
        budget left)."""
        return (
            self.lease.valid
            and self.final is None
            and not self.paused
            and self.book.completed + len(self.book.in_flight) < self.budget
        )

    def _finished(self) -> bool:
        if self.final is None and self.book.completed >= self.budget:
            self.stop(CampaignStatus.COMPLETED, "budget reached")
        return self.final is not None and not self.book.in_flight

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
                        self.intake.maybe_plan()
                await self._changed.wait()

    async def _worker(self, slot: InstrumentSlot) -> None:
        while True:
            work = await self._next_work(slot)
            if work is None:
                return
            slot.busy = True
            self.intake.maybe_plan()  # keep the prefetch queue filled while this step runs
            try:
                await self.steps.execute(slot, work)
            except Exception:  # one bad step must never stop the campaign
                logger.exception("step of experiment %d failed unexpectedly", work.experiment_id)
                await self.steps.fail_experiment(
                    work, None, "internal", "controller error; see log"
                )
            finally:
                slot.busy = False
                self.dispatch.step_done(slot, work)
                await self.notify()

    # ------------------------------------------------------------------ shutdown

    async def _finish(self) -> None:
        final = self.final or CampaignStatus.COMPLETED
        if self.lease.lost is not None:
            self.final = final
            return  # the campaign's status belongs to the controller that holds the lease
        if self.health is not None:
            self.health.write_all()
        self.dispatch.waiting = {}
        await self.dispatch.flush()
        book = self.book

        def write(s: Session) -> CampaignStatus:
            end = final
            # A decision whose write completed after its planning task was cancelled at
            # shutdown left experiments QUEUED that no worker will run: abandon them.
            late = f"campaign {end.value} before it was queued"
            for exp_id in s.scalars(
                select(ExperimentRow.id).where(
                    ExperimentRow.campaign_id == self.campaign_id,
                    ExperimentRow.status == ExperimentStatus.QUEUED,
                )
            ).all():
                self.writer.move(
                    s, exp_id, ExperimentStatus.QUEUED, ExperimentStatus.ABANDONED, late
                )
                book.abandoned += 1
            row = s.get_one(CampaignRow, self.campaign_id)
            if row.status == CampaignStatus.ESTOPPED and end != CampaignStatus.ABORTED:
                end = CampaignStatus.ESTOPPED  # it holds until an operator resets it
            if row.status == CampaignStatus.PAUSED and end != CampaignStatus.ABORTED:
                set_campaign_status(s, row, CampaignStatus.RUNNING)
            if row.status != end:
                set_campaign_status(s, row, end, reason=self.stop_reason)
            self.writer.event(
                s,
                "campaign.stopped",
                f"{end.value}: {self.stop_reason}; {book.completed} completed, "
                f"{book.failed} failed, {book.abandoned} abandoned",
                data=self.progress(),
            )
            return end

        self.final = await self.writer.run(write)

    def dispose(self) -> None:
        """Stop the writer (after the writes asked for) and close the database engine."""
        self.writer.close()
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
