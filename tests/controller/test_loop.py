"""The campaign loop in one process (planner on a thread, no Ray), against real instrument
servers on loopback: multi-step workflows, failing actions, the failure budget."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from controller.loop import CampaignController, ControllerOptions, _cancel_all
from controller.store import (
    create_campaign,
    events,
    make_engine,
    migrate,
    session_factory,
    transaction,
)
from controller.store.lease import LeaseHeldError
from instruments.driver import ActionSpec, Driver, OutputSpec, ParameterLimit, register_driver
from instruments.server import InstrumentServer
from models.campaign import CampaignSpec
from models.errors import InstrumentError
from models.records import Measurement
from models.status import CampaignStatus, ExperimentStatus, StepStatus
from models.tables import (
    CampaignRow,
    ControllerLeaseRow,
    DecisionRow,
    ExperimentRow,
    StepRow,
    utcnow,
)

MELTS_ABOVE_C = 800.0


def truth(temperature_c: float) -> float:
    """Noise-free 'conductivity' of a sample annealed at ``temperature_c``."""
    return -(((temperature_c - 600.0) / 100.0) ** 2)


@register_driver("test-furnace")
class Furnace(Driver):
    """Anneals a sample; fails when the sample melts."""

    version = "1"

    def actions(self) -> list[ActionSpec]:
        return [
            ActionSpec(
                name="anneal",
                parameters=[ParameterLimit(name="temperature_c", minimum=100, maximum=900)],
                outputs=[OutputSpec(name="grain_size_nm")],
                timeout_s=5,
            )
        ]

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        t = float(parameters["temperature_c"])
        if t > MELTS_ABOVE_C:
            raise InstrumentError(self.name, "action_failed", "sample melted")
        return [Measurement("grain_size_nm", t / 10)]


@register_driver("test-meter")
class Meter(Driver):
    """Measures the annealed sample's conductivity."""

    version = "1"

    def actions(self) -> list[ActionSpec]:
        return [
            ActionSpec(
                name="measure",
                parameters=[ParameterLimit(name="temperature_c", minimum=100, maximum=900)],
                outputs=[OutputSpec(name="conductivity")],
                timeout_s=5,
                retry_safe=True,
            )
        ]

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        return [Measurement("conductivity", truth(float(parameters["temperature_c"])))]


def spec(budget: int, max_failures: int | None = None, prefetch: int = 0) -> CampaignSpec:
    return CampaignSpec.model_validate(
        {
            "campaign": {"name": "anneal", "seed": 3},
            "parameters": [
                {"name": "temperature_c", "type": "continuous", "lower": 100, "upper": 900}
            ],
            "objectives": [{"name": "conductivity", "direction": "maximize"}],
            "workflow": [
                {"kind": "furnace", "action": "anneal"},
                {"kind": "meter", "action": "measure"},
            ],
            "instruments": [
                {"name": "furnace-1", "kind": "furnace", "address": "tcp://127.0.0.1:1"},
                {"name": "furnace-2", "kind": "furnace", "address": "tcp://127.0.0.1:1"},
                {"name": "meter-1", "kind": "meter", "address": "tcp://127.0.0.1:1"},
            ],
            # Sobol: the points proposed depend only on how many were asked, not on timing
            "planner": {"name": "sobol", "prefetch": prefetch},
            "budget": {"max_experiments": budget, "max_failures": max_failures},
        }
    )


Operate = Callable[[CampaignController, asyncio.Task[dict[str, Any]]], Awaitable[None]]


def run_campaign(
    tmp_path: Path,
    campaign: CampaignSpec,
    operate: Operate | None = None,
    options: ControllerOptions | None = None,
    *,
    fresh: bool = True,
) -> tuple[str, dict[str, Any]]:
    db = f"sqlite:///{tmp_path / 'loop.db'}"
    if fresh:
        engine = make_engine(db)
        migrate(engine)
        with transaction(session_factory(engine)) as s:
            create_campaign(s, campaign, seed=3, max_experiments=campaign.budget.max_experiments)
        engine.dispose()

    async def go() -> dict[str, Any]:
        servers = [
            InstrumentServer(Furnace("furnace-1"), "tcp://127.0.0.1:*"),
            InstrumentServer(Furnace("furnace-2"), "tcp://127.0.0.1:*"),
            InstrumentServer(Meter("meter-1"), "tcp://127.0.0.1:*"),
        ]
        endpoints = {srv.name: await srv.start() for srv in servers}
        try:
            ctl = CampaignController(
                db, "anneal", endpoints, options or ControllerOptions(use_ray_planner=False)
            )
            try:
                task = asyncio.create_task(ctl.run())
                if operate is not None:
                    try:
                        await operate(ctl, task)
                    except BaseException:
                        task.cancel()
                        raise
                return await task
            finally:
                ctl.dispose()
        finally:
            for srv in servers:
                await srv.stop()

    return db, asyncio.run(go())


@pytest.mark.parametrize("prefetch", [0, 3])
def test_two_step_workflow_runs_each_step_on_its_kind_and_reads_the_last_steps_value(
    tmp_path: Path, prefetch: int
) -> None:
    db, result = run_campaign(tmp_path, spec(budget=12, max_failures=50, prefetch=prefetch))

    assert result["status"] == "COMPLETED"
    assert result["completed"] == 12
    engine = make_engine(db)
    with transaction(session_factory(engine)) as s:
        exps = s.scalars(select(ExperimentRow)).all()
        done = [e for e in exps if e.status == ExperimentStatus.COMPLETED]
        assert len(done) == 12
        for e in done:
            t = e.parameters["temperature_c"]
            assert t <= MELTS_ABOVE_C
            assert [(st.index, st.kind, st.status) for st in e.steps] == [
                (0, "furnace", StepStatus.COMPLETED),
                (1, "meter", StepStatus.COMPLETED),
            ]
            assert e.steps[0].instrument in ("furnace-1", "furnace-2")
            assert e.steps[1].instrument == "meter-1"
            values = {m.name: m.value for m in e.measurements}
            assert values["conductivity"] == pytest.approx(truth(t), abs=1e-12)
            assert values["grain_size_nm"] == pytest.approx(t / 10)
        # Samples that melted failed at the furnace; the meter never saw them.
        failed = [e for e in exps if e.status == ExperimentStatus.FAILED]
        assert failed, "Sobol points cover [800, 900] degC"
        for e in failed:
            assert e.parameters["temperature_c"] > MELTS_ABOVE_C
            assert [(st.index, st.status) for st in e.steps] == [(0, StepStatus.FAILED)]
            assert "sample melted" in (e.reason or "")
        # The budget is met exactly: nothing proposed ahead is left over.
        assert not [
            e for e in exps if e.status not in (ExperimentStatus.COMPLETED, ExperimentStatus.FAILED)
        ]
        pending = s.scalars(select(DecisionRow.n_pending)).all()
        if prefetch:
            assert max(pending) > 3  # proposals were planned while others were in flight
        row = s.scalars(select(CampaignRow)).one()
        kinds = [ev.kind for ev in events(s, row.id)]
        assert kinds.count("step.failed") == len(failed)
        assert kinds[-1] == "campaign.stopped"
    engine.dispose()


def test_campaign_stops_as_failed_when_its_failure_budget_is_spent(tmp_path: Path) -> None:
    db, result = run_campaign(tmp_path, spec(budget=50, max_failures=2))

    assert result["status"] == "FAILED"
    assert result["failed"] >= 2
    assert result["completed"] < 50
    engine = make_engine(db)
    with transaction(session_factory(engine)) as s:
        assert s.scalars(select(CampaignRow)).one().status == CampaignStatus.FAILED
        in_flight = s.scalars(
            select(ExperimentRow).where(
                ExperimentRow.status.in_([ExperimentStatus.QUEUED, ExperimentStatus.RUNNING])
            )
        ).all()
        assert in_flight == []  # everything sent was recorded before it stopped
    engine.dispose()


async def _nothing_starts(ctl: CampaignController) -> bool:
    """Wake every worker and let the loop run until they wait again; then say whether none
    of them started a step. Deterministic: it counts loop iterations, not seconds, so a
    loaded machine cannot make it pass without checking anything."""
    before = ctl.progress()["completed"] + ctl.progress()["failed"]
    for _ in range(5):
        await ctl.notify()  # what a freed instrument or a new proposal would do
        for _ in range(50):  # the woken workers each take their turn
            await asyncio.sleep(0)
            if any(slot.busy for slot in ctl.instruments.values()):
                return False
        # a planning call they started answers in its own time: wait for it, then go again
        await _wait_for(lambda: not ctl.intake.planning)
    return ctl.progress()["completed"] + ctl.progress()["failed"] == before


async def _wait_for(predicate: Callable[[], bool], timeout_s: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_pause_starts_nothing_new_until_resumed(tmp_path: Path) -> None:
    seen: dict[str, int] = {}

    async def operate(ctl: CampaignController, task: asyncio.Task[dict[str, Any]]) -> None:
        await _wait_for(lambda: ctl.progress()["completed"] >= 3)
        await ctl.pause()
        # the steps sent before the pause end, and their results are written
        await _wait_for(
            lambda: (
                not any(slot.busy for slot in ctl.instruments.values()) and not ctl.steps.recording
            )
        )
        seen["idle"] = await _nothing_starts(ctl)
        assert ctl.progress()["paused"]
        await ctl.resume()

    db, result = run_campaign(tmp_path, spec(budget=10, max_failures=50, prefetch=2), operate)

    assert seen["idle"]
    assert result["status"] == "COMPLETED"
    assert result["completed"] == 10
    engine = make_engine(db)
    with transaction(session_factory(engine)) as s:
        row = s.scalars(select(CampaignRow)).one()
        kinds = [ev.kind for ev in events(s, row.id)]
        paused = kinds.index("campaign.paused")
        assert "campaign.running" in kinds[paused:]  # resumed, and the resume is recorded
    engine.dispose()


def test_abort_records_what_was_sent_and_abandons_what_waited(tmp_path: Path) -> None:
    async def operate(ctl: CampaignController, task: asyncio.Task[dict[str, Any]]) -> None:
        await _wait_for(lambda: ctl.progress()["completed"] >= 2)
        await ctl.abort("operator:ada")

    db, result = run_campaign(tmp_path, spec(budget=40, max_failures=50, prefetch=4), operate)

    assert result["status"] == "ABORTED"
    assert result["completed"] < 40
    engine = make_engine(db)
    with transaction(session_factory(engine)) as s:
        exps = s.scalars(select(ExperimentRow)).all()
        statuses = {e.status for e in exps}
        assert statuses <= {
            ExperimentStatus.COMPLETED,
            ExperimentStatus.FAILED,
            ExperimentStatus.ABANDONED,
        }
        for e in exps:  # every step that was sent has its outcome
            assert all(st.status != StepStatus.RUNNING for st in e.steps)
        assert s.scalars(select(CampaignRow)).one().status == CampaignStatus.ABORTED
    engine.dispose()


def test_a_second_controller_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    refused: list[LeaseHeldError] = []

    async def operate(ctl: CampaignController, task: asyncio.Task[dict[str, Any]]) -> None:
        await _wait_for(lambda: ctl.progress()["completed"] >= 2)
        second = CampaignController(
            f"sqlite:///{tmp_path / 'loop.db'}",
            "anneal",
            {n: slot.address for n, slot in ctl.instruments.items()},
            ControllerOptions(use_ray_planner=False),
        )
        try:
            with pytest.raises(LeaseHeldError) as err:
                await second.run()
            refused.append(err.value)
        finally:
            second.dispose()

    db, result = run_campaign(tmp_path, spec(budget=12, max_failures=50), operate)

    assert result["status"] == "COMPLETED"
    assert result["completed"] == 12
    assert refused
    assert refused[0].pid == os.getpid()
    engine = make_engine(db)
    with transaction(session_factory(engine)) as s:
        assert s.scalars(select(ControllerLeaseRow)).all() == []  # given back at the end
        exps = s.scalars(select(ExperimentRow)).all()
        # the budget counts completed experiments; the furnaces melt some samples (FAILED)
        unfailed = [e.id for e in exps if e.status != ExperimentStatus.FAILED]
        assert len(unfailed) <= 12 + 2, unfailed
        for e in exps:  # nothing ran twice: no step re-run, no attempt sent twice
            assert not any(st.rerun for st in e.steps), e.id
            assert len({(st.index, st.attempt) for st in e.steps}) == len(e.steps), e.id
    engine.dispose()


def test_a_controller_whose_lease_is_taken_over_stops_sending_and_writes_no_status(
    tmp_path: Path,
) -> None:
    seen: dict[str, int] = {}

    async def operate(ctl: CampaignController, task: asyncio.Task[dict[str, Any]]) -> None:
        await _wait_for(lambda: ctl.progress()["completed"] >= 3)
        engine = make_engine(f"sqlite:///{tmp_path / 'loop.db'}")
        with transaction(session_factory(engine)) as s:  # another host's controller takes over
            s.execute(
                update(ControllerLeaseRow).values(
                    holder="elsewhere/1/1/x",
                    host="elsewhere",
                    pid=1,
                    expires_at=utcnow() + timedelta(hours=1),
                )
            )
        engine.dispose()
        await _wait_for(lambda: ctl.lease.lost is not None)
        # read after the write that may have been under way when the takeover was noticed
        seen["steps"], seen["experiments"] = await ctl.writer.read(
            lambda s: (
                len(s.scalars(select(StepRow)).all()),
                len(s.scalars(select(ExperimentRow)).all()),
            )
        )

    db, result = run_campaign(
        tmp_path,
        spec(budget=400, max_failures=500, prefetch=2),
        operate,
        ControllerOptions(use_ray_planner=False, lease_s=0.6),
    )

    assert result["status"] == "FAILED"
    assert "another controller took over" in result["stop_reason"]
    engine = make_engine(db)
    with transaction(session_factory(engine)) as s:
        # nothing was sent or planned after the takeover was noticed
        assert len(s.scalars(select(StepRow)).all()) == seen["steps"]
        assert len(s.scalars(select(ExperimentRow)).all()) == seen["experiments"]
        row = s.scalars(select(CampaignRow)).one()
        assert row.status == CampaignStatus.RUNNING  # the new holder's to change
        assert "alarm.controller_fenced" in [ev.kind for ev in events(s, row.id)]
        lease = s.scalars(select(ControllerLeaseRow)).one()
        assert lease.holder == "elsewhere/1/1/x"  # not released by the fenced controller
    engine.dispose()


def test_a_campaign_paused_by_an_operator_stays_paused_when_its_controller_restarts(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'loop.db'}"
    seen: dict[str, Any] = {}

    async def operate(ctl: CampaignController, task: asyncio.Task[dict[str, Any]]) -> None:
        await _wait_for(lambda: ctl.progress()["completed"] >= 2)
        await ctl.pause("operator:ada")
        await _wait_for(lambda: not any(slot.busy for slot in ctl.instruments.values()))
        task.cancel()  # the controller dies while the campaign is paused

    with pytest.raises(asyncio.CancelledError):
        run_campaign(tmp_path, spec(budget=8, max_failures=50), operate)

    async def restarted(ctl: CampaignController, task: asyncio.Task[dict[str, Any]]) -> None:
        await _wait_for(lambda: ctl.progress()["paused"])
        seen["idle"] = await _nothing_starts(ctl)
        await ctl.resume("operator:ada")

    engine = make_engine(db)
    with transaction(session_factory(engine)) as s:
        assert s.scalars(select(CampaignRow)).one().status == CampaignStatus.PAUSED
    engine.dispose()
    _, result = run_campaign(tmp_path, spec(budget=8, max_failures=50), restarted, fresh=False)

    assert seen["idle"]
    assert result["status"] == "COMPLETED"
    assert result["completed"] == 8


def test_shutdown_ends_a_background_task_that_lost_its_cancellation() -> None:
    async def stubborn() -> None:  # as a heartbeat loop whose wait_for swallowed the cancel
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        while True:
            await asyncio.sleep(0.05)

    async def go() -> asyncio.Task[None]:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0.01)
        await asyncio.wait_for(_cancel_all([task]), 20)
        return task

    assert asyncio.run(go()).cancelled()
