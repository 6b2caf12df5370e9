"""The controller's parts without ZeroMQ: the book, the retry rule, the intake and recovery,
driven with an in-memory :class:`~controller.book.Book` and the real
:class:`~controller.writer.Writer` on a SQLite store."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.alarms import Alarms
from controller.book import Book
from controller.costs import CostLedger
from controller.intake import ProposalIntake
from controller.recovery import Recovery
from controller.safety import SafetyGate
from controller.scheduling import Dispatcher
from controller.steps import StepRunner, retry_decision
from controller.store import create_campaign, make_engine, migrate, session_factory, transaction
from controller.work import ControllerOptions, InstrumentSlot, Work
from controller.writer import Writer
from instruments.driver import ActionSpec, InstrumentDescription, OutputSpec, ParameterLimit
from models.campaign import CampaignSpec
from models.errors import StoreError
from models.params import ParamValue
from models.records import Decision, Observation, Proposal
from models.status import CampaignStatus, ExperimentStatus, StepStatus
from models.tables import EventRow, ExperimentRow, StepRow

X1_MAX = 0.7


def spec(**safety: Any) -> CampaignSpec:
    return CampaignSpec.model_validate(
        {
            "campaign": {"name": "unit", "seed": 3},
            "parameters": [
                {"name": "x1", "type": "continuous", "lower": 0.0, "upper": 1.0},
                {"name": "x2", "type": "continuous", "lower": 0.0, "upper": 1.0},
            ],
            "objectives": [{"name": "y", "direction": "maximize"}],
            "workflow": [{"kind": "station", "action": "measure"}],
            "instruments": [
                {"name": "station-1", "kind": "station", "address": "tcp://127.0.0.1:1"}
            ],
            "planner": {"name": "random", "prefetch": 0},
            "budget": {"max_experiments": 10},
            "safety": safety,
            "reliability": {"max_refused_in_a_row": 3},
        }
    )


def station(retry_safe: bool) -> InstrumentDescription:
    return InstrumentDescription(
        name="station-1",
        driver="unit",
        driver_version="1",
        actions=[
            ActionSpec(
                name="measure",
                parameters=[
                    ParameterLimit(name="x1", minimum=0.0, maximum=X1_MAX),
                    ParameterLimit(name="x2", minimum=0.0, maximum=1.0),
                ],
                outputs=[OutputSpec(name="y")],
                timeout_s=5,
                retry_safe=retry_safe,
            )
        ],
    )


class ScriptedPlanner:
    """A planner client that proposes what it is given and keeps what it is told."""

    def __init__(self, batches: list[list[dict[str, ParamValue]]]) -> None:
        self.batches = list(batches)
        self.told: list[Observation] = []
        self.asked: list[tuple[int, int]] = []

    async def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]]) -> Decision:
        self.asked.append((n, len(pending)))
        if not self.batches:
            raise RuntimeError("the script has no more proposals")
        points = self.batches.pop(0)
        return Decision(
            proposals=[Proposal(p, origin="script") for p in points],
            planner="script",
            version="1",
            seed=0,
            n_train=len(self.told),
            n_pending=len(pending),
        )

    async def tell(self, observations: Sequence[Observation]) -> None:
        self.told.extend(observations)

    async def tell_related(self, task: str, observations: Sequence[Observation]) -> None:
        raise AssertionError("no related campaigns here")

    def close(self) -> None:
        pass


class Loop:
    """The lifecycle the parts see (see controller.work.Lifecycle), without instruments
    to talk to: nothing is sent, so there is no ZeroMQ."""

    def __init__(
        self,
        campaign: CampaignSpec,
        campaign_id: int,
        writer: Writer,
        planner: ScriptedPlanner,
        *,
        retry_safe: bool = False,
    ) -> None:
        self.spec = campaign
        self.options = ControllerOptions(use_ray_planner=False)
        self.name = campaign.campaign.name
        self.campaign_id = campaign_id
        self.uid = "0123456789abcdef"
        self.budget = campaign.budget.max_experiments
        self.max_failures = self.budget
        self.instruments = {  # no client: nothing is sent
            "station-1": InstrumentSlot(
                "station-1",
                "station",
                "tcp://127.0.0.1:1",
                None,
                station(retry_safe),  # type: ignore[arg-type]
            )
        }
        self.instruments["station-1"].silent = False
        self.gate: SafetyGate | None = SafetyGate(campaign, {"station-1": station(retry_safe)})
        self.planner = planner
        self.health = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.alarms = Alarms(campaign.alarms, self.name, campaign_id, writer.sessions, self.spawn)
        self.lease = SimpleNamespace(lost=None, me=SimpleNamespace(holder="unit"), ttl_s=30.0)
        self.paused = False
        self.final: CampaignStatus | None = None
        self.stop_reason: str | None = None
        self.estop = SimpleNamespace(holds=lambda work: False, claims=lambda outcome: False)
        self.dispatch: Dispatcher  # set by make_parts

    def stop(self, status: CampaignStatus, reason: str) -> None:
        if self.final is None:
            self.final, self.stop_reason = status, reason

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def notify(self) -> None:
        pass

    def may_start_new(self) -> bool:
        return self.final is None


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Writer, int, CampaignSpec]]:
    campaign = spec()
    engine = make_engine(f"sqlite:///{tmp_path / 'unit.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as s:
        cid = create_campaign(s, campaign, seed=3, max_experiments=10).id
    writer = Writer(sessions, cid)
    yield writer, cid, campaign
    writer.close()
    engine.dispose()


def make_parts(
    writer: Writer,
    cid: int,
    campaign: CampaignSpec,
    planner: ScriptedPlanner,
    *,
    retry_safe: bool = False,
) -> tuple[Loop, Book, StepRunner, ProposalIntake]:
    loop = Loop(campaign, cid, writer, planner, retry_safe=retry_safe)
    book = Book(["station"], CostLedger(None))
    loop.dispatch = Dispatcher(loop, book, writer)  # type: ignore[arg-type]
    steps = StepRunner(loop, book, writer)  # type: ignore[arg-type]
    intake = ProposalIntake(loop, book, writer, steps)  # type: ignore[arg-type]
    return loop, book, steps, intake


def statuses(writer: Writer) -> list[tuple[int, ExperimentStatus]]:
    with transaction(writer.sessions, read_only=True) as s:
        rows = s.scalars(select(ExperimentRow).order_by(ExperimentRow.id)).all()
        return [(r.id, r.status) for r in rows]


def event_kinds(writer: Writer) -> list[str]:
    with transaction(writer.sessions, read_only=True) as s:
        return list(s.scalars(select(EventRow.kind).order_by(EventRow.id)))


# ---------------------------------------------------------------------- the retry rule


@pytest.mark.parametrize(
    ("retry_safe", "attempts_left", "aborted", "fate_known"),
    list(itertools.product([True, False], repeat=4)),
)
def test_the_retry_decision_table(
    retry_safe: bool, attempts_left: bool, aborted: bool, fate_known: bool
) -> None:
    got = retry_decision(
        retry_safe=retry_safe,
        attempt=1 if attempts_left else 3,
        max_attempts=3,
        aborted=aborted,
        fate_known=fate_known,
    )
    if retry_safe and attempts_left and not aborted:
        assert got == "retry"
    elif not retry_safe and not fate_known:
        assert got == "interrupt"  # never sent twice, and nobody knows if it ran
    else:
        assert got == "fail"


# ---------------------------------------------------------------------- the book


def test_the_book_admits_queues_approves_and_finishes() -> None:
    book = Book(["furnace", "meter"], CostLedger(10.0, completed=2.0))
    book.admit(1, {"x1": 0.1}, ExperimentStatus.QUEUED, cost=3.0)
    book.admit(2, {"x1": 0.2}, ExperimentStatus.PROPOSED, cost=4.0)
    book.hold(2)
    book.queue(Work(1, 0, {"x1": 0.1}))
    book.queue(Work(1, 1, {"x1": 0.1}), first=True)
    assert [(k, w.index) for k, w in book.ready_steps()] == [("furnace", 0), ("meter", 1)]
    assert book.spent() == 2.0 + 3.0 + 4.0
    assert book.is_awaiting([1, 2]) == [1]
    work = book.approve(2)
    assert (work.experiment_id, work.index, book.awaiting) == (2, 0, {})
    book.observe(1, [])
    assert book.observations(1, []) == {}
    book.status[1] = ExperimentStatus.COMPLETED
    book.finish(1)
    book.count(ExperimentStatus.COMPLETED)
    assert (book.completed, book.seen, book.spent()) == (1, 1, 2.0 + 3.0 + 4.0)
    book.set_aside(2)  # INTERRUPTED: not in flight, its cost still held for a re-run
    assert book.in_flight == {}
    book.admit(2, {"x1": 0.2})
    assert book.spent() == 9.0
    drained = book.drain()
    assert [(w.experiment_id, w.index) for w in drained] == [(1, 0), (1, 1)]
    assert book.first_queue_length() == 0
    with pytest.raises(ValueError, match="status"):
        book.count(ExperimentStatus.RUNNING)


# ---------------------------------------------------------------------- the intake


def test_the_intake_writes_gates_and_queues_and_teaches_the_refusals(
    store: tuple[Writer, int, CampaignSpec],
) -> None:
    writer, cid, campaign = store
    planner = ScriptedPlanner([[{"x1": 0.5, "x2": 0.5}, {"x1": 0.9, "x2": 0.5}]])
    loop, book, _, intake = make_parts(writer, cid, campaign, planner)

    async def go() -> None:
        await intake.plan(2)

    asyncio.run(go())
    (ok, _), (refused, _) = statuses(writer)
    assert statuses(writer) == [
        (ok, ExperimentStatus.QUEUED),
        (refused, ExperimentStatus.ABANDONED),
    ]
    assert list(book.in_flight) == [ok]
    assert [w.experiment_id for _, w in book.ready_steps()] == [ok]
    assert (book.abandoned, book.refused_in_a_row) == (1, 1)
    assert "safety.refused" in event_kinds(writer)
    # the refused point is what the planner knows, as infeasible (see known_observations)
    assert [(o.experiment_id, o.feasible) for o in planner.told] == [(refused, False)]
    assert loop.final is None
    assert not intake.planning


def test_the_intake_holds_accepted_proposals_for_approval(tmp_path: Path) -> None:
    campaign = spec(require_approval=True)
    engine = make_engine(f"sqlite:///{tmp_path / 'unit.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as s:
        cid = create_campaign(s, campaign, seed=3, max_experiments=10).id
    writer = Writer(sessions, cid)
    try:
        planner = ScriptedPlanner([[{"x1": 0.1, "x2": 0.1}]])
        _, book, _, intake = make_parts(writer, cid, campaign, planner)
        asyncio.run(intake.plan(1))
        ((exp_id, status),) = statuses(writer)
        assert status == ExperimentStatus.PROPOSED
        assert list(book.awaiting) == [exp_id]
        assert book.first_queue_length() == 0
        assert event_kinds(writer)[-1] == "approval.needed"
    finally:
        writer.close()
        engine.dispose()


def test_proposals_refused_in_a_row_stop_the_campaign_with_an_alarm(
    store: tuple[Writer, int, CampaignSpec],
) -> None:
    writer, cid, campaign = store
    far = {"x1": 0.95, "x2": 0.5}
    planner = ScriptedPlanner([[far, far], [far]])
    loop, book, _, intake = make_parts(writer, cid, campaign, planner)

    async def go() -> None:
        await intake.plan(2)
        assert loop.final is None  # 2 of 3
        await intake.plan(1)

    asyncio.run(go())
    assert loop.final == CampaignStatus.FAILED
    assert loop.stop_reason is not None
    assert "no progress" in loop.stop_reason
    assert book.abandoned == 3
    assert "alarm.no_progress" in event_kinds(writer)


def test_a_planner_error_is_recorded_and_counted(
    store: tuple[Writer, int, CampaignSpec],
) -> None:
    writer, cid, campaign = store
    loop, book, _, intake = make_parts(writer, cid, campaign, ScriptedPlanner([]))
    loop.options.max_planner_errors = 1
    asyncio.run(intake.plan(1))
    assert intake.planner_errors == 1
    assert loop.final == CampaignStatus.FAILED
    assert event_kinds(writer)[-1] == "planner.error"
    assert book.in_flight == {}


# ---------------------------------------------------------------------- one write path


def test_every_move_off_the_routine_path_leaves_its_event(
    store: tuple[Writer, int, CampaignSpec],
) -> None:
    writer, _cid, _ = store
    decision = Decision([Proposal({"x1": 0.1, "x2": 0.1})], "script", "1", 0, 0, 0)

    def write(s: Session) -> int:
        _, ids = writer.decision(s, decision, [(0, decision.proposals[0], {"x1": 0.1})], [])
        writer.move(s, ids[0], ExperimentStatus.QUEUED, ExperimentStatus.RUNNING)
        writer.move(s, ids[0], ExperimentStatus.RUNNING, ExperimentStatus.FAILED, "broke")
        writer.move(s, ids[0], ExperimentStatus.FAILED, ExperimentStatus.QUEUED, actor="ada")
        return ids[0]

    exp_id = writer.now(write)
    with transaction(writer.sessions, read_only=True) as s:
        evs = s.scalars(select(EventRow).where(EventRow.experiment_id == exp_id)).all()
        assert [(e.kind, e.actor, e.data["reason"]) for e in evs] == [
            ("experiment.failed", "controller", "broke"),
            ("experiment.queued", "ada", None),
        ]
    with pytest.raises(StoreError, match="no longer RUNNING"):  # compare-and-set
        writer.now(
            lambda s: writer.move(s, exp_id, ExperimentStatus.RUNNING, ExperimentStatus.FAILED)
        )
    writer.fence("another controller took over")
    with pytest.raises(StoreError, match="not written: another controller"):
        asyncio.run(writer.run(lambda s: None))


# ---------------------------------------------------------------------- recovery


def _seed(writer: Writer, steps: StepRunner) -> dict[str, int]:
    """The store a crashed controller left: two PROPOSED (one out of limits), one QUEUED
    without steps, one RUNNING whose step was sent to an instrument that is gone."""
    props = [
        Proposal({"x1": 0.2, "x2": 0.2}),
        Proposal({"x1": 0.9, "x2": 0.2}),
        Proposal({"x1": 0.3, "x2": 0.3}),
        Proposal({"x1": 0.4, "x2": 0.4}),
    ]
    decision = Decision(props, "script", "1", 0, 0, 0)

    def write(s: Session) -> dict[str, int]:
        _, held = writer.decision(
            s, decision, [(k, p, p.parameters) for k, p in enumerate(props[:2])], [], hold=True
        )
        _, queued = writer.decision(
            s, decision, [(k, p, p.parameters) for k, p in enumerate(props[2:])], []
        )
        running = queued[1]
        writer.move(s, running, ExperimentStatus.QUEUED, ExperimentStatus.RUNNING)
        work = Work(running, 0, dict(props[3].parameters))
        writer.start_step(
            s,
            work,
            kind="station",
            action="measure",
            parameters=dict(props[3].parameters),
            request_id=steps.request_id(running, 0, 1),
            instrument="station-0",  # not an instrument of this controller any more
        )
        return {"gated": held[0], "refused": held[1], "queued": queued[0], "running": running}

    return writer.now(write)


@pytest.mark.parametrize("retry_safe", [False, True])
def test_recovery_gates_requeues_and_interrupts_what_the_store_holds(
    store: tuple[Writer, int, CampaignSpec], retry_safe: bool
) -> None:
    writer, cid, campaign = store
    loop, book, steps, _ = make_parts(
        writer, cid, campaign, ScriptedPlanner([]), retry_safe=retry_safe
    )
    ids = _seed(writer, steps)
    summary = asyncio.run(Recovery(loop, book, writer, steps).reconcile())  # type: ignore[arg-type]

    got = dict(statuses(writer))
    assert got[ids["gated"]] == ExperimentStatus.QUEUED
    assert got[ids["refused"]] == ExperimentStatus.ABANDONED
    assert got[ids["queued"]] == ExperimentStatus.QUEUED
    ready = [(w.experiment_id, w.attempt, w.rerun) for _, w in book.ready_steps()]
    kinds = event_kinds(writer)
    with transaction(writer.sessions, read_only=True) as s:
        step = s.scalars(select(StepRow).where(StepRow.experiment_id == ids["running"])).one()
        assert step.status == StepStatus.INTERRUPTED
    if retry_safe:
        # run again as a flagged second attempt, first in the queue
        assert summary == {"gated": 1, "refused": 1, "requeued": 1, "rerun": 1}
        assert got[ids["running"]] == ExperimentStatus.RUNNING
        assert ready == [
            (ids["running"], 2, True),
            (ids["gated"], 1, False),
            (ids["queued"], 1, False),
        ]
        assert "step.retry" in kinds
    else:
        # never sent twice: it waits for an operator, with an alarm and its event
        assert summary == {"gated": 1, "refused": 1, "requeued": 1, "interrupted": 1}
        assert got[ids["running"]] == ExperimentStatus.INTERRUPTED
        assert ids["running"] not in book.in_flight
        assert ready == [(ids["gated"], 1, False), (ids["queued"], 1, False)]
        assert {"alarm.decision_needed", "experiment.interrupted"} <= set(kinds)
    assert {"safety.refused", "experiment.abandoned", "recovery.done"} <= set(kinds)
    assert book.abandoned == 1
    assert book.refused_in_a_row == 1
