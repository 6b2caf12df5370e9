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
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from controller.planning import PlannerClient, RayPlanner, ThreadPlanner, build_planner
from controller.recovery import Recovery
from controller.safety import SafetyGate
from controller.store import (
    add_event,
    count_by_status,
    get_campaign,
    make_engine,
    migrate,
    observations,
    session_factory,
    set_campaign_status,
    set_experiment_status,
    transaction,
)
from controller.store.hot import finish_step, insert_decision, move_experiment, start_step
from instruments.client import InstrumentClient, RequestState
from instruments.driver import InstrumentDescription
from instruments.protocol import INTERRUPTED
from models.campaign import CampaignSpec
from models.errors import (
    CampaignStateError,
    InstrumentError,
    InstrumentTimeoutError,
    InvalidCampaignError,
    ParameterLimitError,
)
from models.params import ParamValue
from models.records import Observation, Proposal
from models.status import CampaignStatus, ExperimentStatus, StepStatus
from models.tables import CampaignRow, ExperimentRow

logger = logging.getLogger(__name__)


@dataclass
class Work:
    """One step of one experiment, ready for an instrument.

    Attributes:
        experiment_id: The experiment.
        index: Position of the step in the workflow.
        point: The experiment's parameters.
        attempt: Attempt number of the step (1 unless re-run).
        rerun: Whether this attempt re-runs a step whose fate was lost.
        step_id: An already-written step to send again (never accepted) or adopt.
        request_id: That step's request id.
        adopt: The instrument already has the request: wait for it, do not submit.
        step_status: The step's status in the store (RUNNING once written; QUEUED for a
            step written by an older controller and never sent).
    """

    experiment_id: int
    index: int
    point: dict[str, ParamValue]
    attempt: int = 1
    rerun: bool = False
    step_id: int | None = None
    request_id: str | None = None
    adopt: bool = False
    step_status: StepStatus = StepStatus.RUNNING


@dataclass
class InstrumentSlot:
    """The controller's view of one instrument."""

    name: str
    kind: str
    address: str
    client: InstrumentClient
    description: InstrumentDescription | None = None
    busy: bool = False
    in_service: bool = True
    resume: deque[Work] = field(default_factory=deque)


@dataclass
class ControllerOptions:
    """Settings of one controller run.

    Attributes:
        use_ray_planner: Host the planner in a Ray actor (else a worker thread).
        connect_timeout_s: How long to keep trying to reach the instruments at start.
        rpc_timeout_s: Time allowed for one protocol round trip.
        submit_wait_s: How long a submit waits for the result in the same round trip.
        max_planner_errors: Consecutive planner failures before the campaign fails.
    """

    use_ray_planner: bool = True
    connect_timeout_s: float = 60.0
    rpc_timeout_s: float = 10.0
    submit_wait_s: float = 1.0
    max_planner_errors: int = 3


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
            self.instruments[inst.name] = InstrumentSlot(
                inst.name,
                inst.kind,
                address,
                InstrumentClient(address, name=inst.name, timeout_s=self.options.rpc_timeout_s),
            )
        self._timeouts = {i.name: i.timeout_s for i in self.spec.instruments}
        self.gate: SafetyGate | None = None
        self._planner: PlannerClient | None = None
        self._planning = False
        self._planner_errors = 0
        self._changed = asyncio.Condition() if _has_loop() else None
        self._paused = False
        self._stop_reason: str | None = None
        self._final: CampaignStatus | None = None
        self._started = time.monotonic()
        self._background: set[asyncio.Task[None]] = set()
        # Status of every experiment in flight, as last written (the store's writes are
        # compare-and-set against it), and the measurements of the earlier steps of
        # multi-step experiments still in flight.
        self._status: dict[int, ExperimentStatus] = {}
        self._earlier: dict[int, dict[str, float]] = {}

    # ------------------------------------------------------------------ public API

    async def run(self) -> dict[str, Any]:
        """Run the campaign until its budget is reached or it is stopped.

        Returns:
            The final progress (see :meth:`progress`).

        Raises:
            InvalidCampaignError: If the instruments cannot run the workflow.
            InstrumentError: If no instrument of a needed kind can be reached.
        """
        self._changed = asyncio.Condition()
        self._planner = self._make_planner()  # starts loading its models while we connect
        workers: list[asyncio.Task[None]] = []
        try:
            await self._connect()
            with transaction(self._sessions) as s:
                row = s.get(CampaignRow, self.campaign_id)
                assert row is not None
                if row.status != CampaignStatus.RUNNING:
                    set_campaign_status(s, row, CampaignStatus.RUNNING)
                add_event(
                    s,
                    "campaign.started",
                    f"controller started: {self._completed}/{self.budget} experiments completed",
                    campaign_id=self.campaign_id,
                    data={"completed": self._completed, "budget": self.budget},
                )
                history = observations(s, self.campaign_id, list(self.spec.objectives))
            await Recovery(self).reconcile()
            if history:
                await self._planner.tell(history)
            workers = [
                asyncio.create_task(self._worker(slot), name=f"worker-{slot.name}")
                for slot in self.instruments.values()
                if slot.in_service
            ]
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
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
            "paused": self._paused,
            "status": (self._final or CampaignStatus.RUNNING).value,
            "stop_reason": self._stop_reason,
        }

    async def pause(self, actor: str = "operator") -> None:
        """Stop starting new steps; steps already sent finish and are recorded."""
        self._paused = True
        with transaction(self._sessions) as s:
            row = s.get(CampaignRow, self.campaign_id)
            assert row is not None
            set_campaign_status(s, row, CampaignStatus.PAUSED, actor=actor)
        await self._notify()

    async def resume(self, actor: str = "operator") -> None:
        """Undo :meth:`pause`."""
        self._paused = False
        with transaction(self._sessions) as s:
            row = s.get(CampaignRow, self.campaign_id)
            assert row is not None
            set_campaign_status(s, row, CampaignStatus.RUNNING, actor=actor)
        await self._notify()

    async def abort(self, actor: str = "operator") -> None:
        """Start nothing more; the campaign ends ABORTED once in-flight steps are recorded."""
        self._stop(CampaignStatus.ABORTED, f"aborted by {actor}")
        await self._notify()

    # ------------------------------------------------------------------ start-up

    def _make_planner(self) -> PlannerClient:
        if self.options.use_ray_planner:
            return RayPlanner(self.spec, self.seed)
        return ThreadPlanner(build_planner(self.spec, self.seed))

    async def _connect(self) -> None:
        deadline = time.monotonic() + self.options.connect_timeout_s

        async def describe(slot: InstrumentSlot) -> None:
            while True:
                try:
                    slot.description = await slot.client.describe()
                    return
                except InstrumentError as exc:
                    if time.monotonic() > deadline:
                        slot.in_service = False
                        logger.warning("instrument %s unreachable: %s", slot.name, exc)
                        return
                    await asyncio.sleep(0.2)

        await asyncio.gather(*(describe(s) for s in self.instruments.values()))
        up = {n: s.description for n, s in self.instruments.items() if s.description}
        with transaction(self._sessions) as s:
            for slot in self.instruments.values():
                if slot.description is None:
                    add_event(
                        s,
                        "instrument.unreachable",
                        f"{slot.name} did not answer at {slot.address}",
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

    def _may_start_new(self) -> bool:
        return (
            self._final is None
            and not self._paused
            and self._completed + len(self._in_flight) < self.budget
        )

    def _finished(self) -> bool:
        if self._final is None and self._completed >= self.budget:
            self._stop(CampaignStatus.COMPLETED, "budget reached")
        return self._final is not None and not self._in_flight

    async def _next_work(self, slot: InstrumentSlot) -> Work | None:
        assert self._changed is not None
        first_kind = self.spec.workflow[0].kind
        async with self._changed:
            while True:
                if slot.resume:
                    return slot.resume.popleft()
                if self._finished():
                    self._changed.notify_all()
                    return None
                queue = self._ready[slot.kind] if slot.kind in self._ready else deque()
                if queue and not self._paused:
                    return queue.popleft()
                if (
                    slot.kind == first_kind
                    and not self._planning
                    and not queue
                    and self._may_start_new()
                ):
                    self._planning = True
                    self._spawn(self._plan())
                await self._changed.wait()

    async def _worker(self, slot: InstrumentSlot) -> None:
        while True:
            work = await self._next_work(slot)
            if work is None:
                return
            slot.busy = True
            try:
                await self._execute(slot, work)
            except Exception:  # one bad step must never stop the campaign
                logger.exception("step of experiment %d failed unexpectedly", work.experiment_id)
                self._fail_experiment(work, None, "internal", "controller error; see log")
            finally:
                slot.busy = False
                await self._notify()

    def _idle_first_kind(self) -> int:
        kind = self.spec.workflow[0].kind
        return sum(
            1
            for s in self.instruments.values()
            if s.kind == kind and s.in_service and s.description and not s.busy and not s.resume
        )

    async def _plan(self) -> None:
        """Ask the planner for as many experiments as there are idle instruments."""
        assert self._planner is not None
        assert self.gate is not None
        try:
            room = self.budget - self._completed - len(self._in_flight)
            n = max(1, min(self._idle_first_kind(), room))
            pending = list(self._in_flight.values())
            try:
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
            accepted: list[tuple[int, Proposal, dict[str, ParamValue]]] = []
            refusals: list[tuple[int, Proposal, ParameterLimitError]] = []
            for k, prop in enumerate(decision.proposals[:room]):
                try:
                    accepted.append((k, prop, self.gate.check_proposal(prop.parameters)))
                except ParameterLimitError as exc:
                    refusals.append((k, prop, exc))
            with transaction(self._sessions) as s:
                _, ids = insert_decision(
                    s,
                    self.campaign_id,
                    decision,
                    accepted,
                    [(k, p, f"safety gate: {why}") for k, p, why in refusals],
                )
                for k, _, why in refusals:
                    self._log_refusal(s, ids[k], why)
            for k, _, point in accepted:
                exp_id = ids[k]
                self._status[exp_id] = ExperimentStatus.QUEUED
                self._in_flight[exp_id] = point
                self._ready[self.spec.workflow[0].kind].append(Work(exp_id, 0, point))
            refused = [Observation(dict(p.parameters), {}, False, ids[k]) for k, p, _ in refusals]
            if refused:
                await self._planner.tell(refused)
        finally:
            self._planning = False
            await self._notify()

    def _refuse(self, s: Session, exp: ExperimentRow, exc: ParameterLimitError) -> None:
        """Abandon an experiment the safety gate refused (cold paths: ORM row at hand)."""
        set_experiment_status(s, exp, ExperimentStatus.ABANDONED, reason=f"safety gate: {exc}")
        self._log_refusal(s, exp.id, exc)

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
        self._in_flight.pop(work.experiment_id, None)
        self._status.pop(work.experiment_id, None)
        self._earlier.pop(work.experiment_id, None)

    def request_id(self, experiment_id: int, index: int, attempt: int) -> str:
        """The request id of a step: derived from the experiment, unique per attempt."""
        return f"{self.uid[:12]}-{experiment_id}-{index}-{attempt}"

    async def _execute(self, slot: InstrumentSlot, work: Work) -> None:
        assert self.gate is not None
        step_spec = self.spec.workflow[work.index]
        params = self.gate.step_parameters(work.index, work.point)
        try:
            self.gate.check_dispatch(slot.name, work.index, params)
        except ParameterLimitError as exc:
            with transaction(self._sessions) as s:
                self._move(s, work, ExperimentStatus.ABANDONED, f"safety gate: {exc}")
                self._log_refusal(s, work.experiment_id, exc)
            self._forget(work)
            assert self._planner is not None
            await self._planner.tell([Observation(work.point, {}, False, work.experiment_id)])
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
            work.step_id, work.request_id = step_id, rid
        assert work.request_id is not None
        action = self.gate.action(slot.name, work.index)
        timeout_s = self._timeouts.get(slot.name) or action.timeout_s
        try:
            if work.adopt:
                state = await slot.client.wait(work.request_id, timeout_s=timeout_s)
            else:
                wait_s = min(self.options.submit_wait_s, timeout_s)
                state = await slot.client.submit(
                    work.request_id, step_spec.action, params, wait_s=wait_s
                )
                if not state.terminal:
                    state = await slot.client.wait(work.request_id, timeout_s=timeout_s)
        except InstrumentTimeoutError as exc:
            await _best_effort_cancel(slot.client, work.request_id)
            self._fail_experiment(work, slot.name, exc.code, str(exc))
            return
        except InstrumentError as exc:
            self._fail_experiment(work, slot.name, exc.code, str(exc))
            return
        try:
            await self._record(slot, work, state)
        except InstrumentError as exc:  # a result that does not carry the objectives
            self._fail_experiment(work, slot.name, exc.code, str(exc), state)

    async def _record(self, slot: InstrumentSlot, work: Work, state: RequestState) -> None:
        """Write a finished request's outcome and move the experiment on."""
        if state.state != "completed":
            err = state.error
            code = err.code if err else state.state
            msg = err.message if err else f"request ended {state.state}"
            if (
                code == INTERRUPTED
                and self.gate
                and self.gate.action(slot.name, work.index).retry_safe
            ):
                self.rerun(work, f"{slot.name}: {msg}")
                return
            self._fail_experiment(work, slot.name, code, msg, state)
            return
        last = work.index == len(self.spec.workflow) - 1
        obs: Observation | None = None
        if last:
            values = self._objective_values(work, state)
            missing = [o.name for o in self.spec.objectives if o.name not in values]
            if missing:
                raise InstrumentError(
                    slot.name, "bad_result", f"objectives missing from the result: {missing}"
                )
            obs = Observation(
                work.point,
                {o.name: values[o.name] for o in self.spec.objectives},
                True,
                work.experiment_id,
            )
        assert work.step_id is not None
        with transaction(self._sessions) as s:
            finish_step(
                s,
                work.step_id,
                work.experiment_id,
                StepStatus.COMPLETED,
                current=work.step_status,
                started_at=state.started_at,
                finished_at=state.finished_at,
                measurements=state.measurements,
            )
            if last:
                self._move(s, work, ExperimentStatus.COMPLETED)
        if obs is None:
            earlier = self._earlier.setdefault(work.experiment_id, {})
            earlier.update({m.name: m.value for m in state.measurements if m.value is not None})
            nxt = Work(work.experiment_id, work.index + 1, work.point)
            self._ready[self.spec.workflow[work.index + 1].kind].append(nxt)
            return
        self._forget(work)
        self._completed += 1
        assert self._planner is not None
        await self._planner.tell([obs])

    def _objective_values(self, work: Work, state: RequestState) -> dict[str, float]:
        """Objective values from this step's result, else from the experiment's earlier steps."""
        values = dict(self._earlier.get(work.experiment_id, {}))
        values.update({m.name: m.value for m in state.measurements if m.value is not None})
        return {k: float(v) for k, v in values.items()}

    def _move(
        self, s: Session, work: Work, target: ExperimentStatus, reason: str | None = None
    ) -> None:
        """Change an in-flight experiment's status (compare-and-set in the store)."""
        current = self._current(s, work.experiment_id)
        self._status[work.experiment_id] = move_experiment(
            s, work.experiment_id, current, target, reason=reason
        )

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
            finish_step(
                s,
                work.step_id,
                work.experiment_id,
                StepStatus.INTERRUPTED,
                current=work.step_status,
                error=reason,
            )
            add_event(
                s,
                "step.rerun",
                f"experiment {work.experiment_id} step {work.index} "
                f"({self.spec.workflow[work.index].action}) is run again as attempt "
                f"{work.attempt + 1}: {reason}",
                campaign_id=self.campaign_id,
                experiment_id=work.experiment_id,
                data={"request_id": work.request_id, "attempt": work.attempt + 1},
            )
        nxt = Work(work.experiment_id, work.index, work.point, work.attempt + 1, rerun=True)
        self._ready[self.spec.workflow[work.index].kind].appendleft(nxt)

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
                finish_step(
                    s,
                    work.step_id,
                    work.experiment_id,
                    StepStatus.FAILED,
                    current=work.step_status,
                    error=f"{code}: {message}",
                    started_at=state.started_at if state else None,
                    finished_at=state.finished_at if state else None,
                )
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
        if self._planner is not None:
            self._spawn(
                self._planner.tell([Observation(work.point, {}, False, work.experiment_id)])
            )
        if self._failed >= self.max_failures:
            self._stop(CampaignStatus.FAILED, f"{self._failed} experiments failed")

    # ------------------------------------------------------------------ shutdown

    def _finish(self) -> None:
        final = self._final or CampaignStatus.COMPLETED
        with transaction(self._sessions) as s:
            row = s.get(CampaignRow, self.campaign_id)
            assert row is not None
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


async def _best_effort_cancel(client: InstrumentClient, request_id: str) -> None:
    try:
        await client.cancel(request_id)
    except InstrumentError as exc:
        logger.warning("could not cancel %s: %s", request_id, exc)


def _now() -> datetime:
    from models.tables import utcnow

    return utcnow()


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


__all__ = [
    "CampaignController",
    "ControllerOptions",
    "InstrumentSlot",
    "InvalidCampaignError",
    "Work",
]
