"""The emergency stop, end to end in one process: a real controller, a real simulated
furnace behind a real instrument server, commands sent through the store as the CLI does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from controller.control import send_command
from controller.loop import CampaignController, ControllerOptions
from controller.store import create_campaign, make_engine, migrate, session_factory, transaction
from instruments.server import InstrumentServer
from models.campaign import CampaignSpec
from models.instrument_spec import SimulatedInstrumentSpec
from models.status import CampaignStatus, CommandStatus, ExperimentStatus, StepStatus
from models.tables import CampaignRow, EventRow, ExperimentRow, StepRow
from sim.furnace import SimulatedFurnaceDriver

DURATION_S = 2.0


def spec(budget: int) -> CampaignSpec:
    return CampaignSpec.model_validate(
        {
            "campaign": {"name": "hot", "seed": 3},
            "parameters": [
                {"name": "x1", "type": "continuous", "lower": -5, "upper": 10},
                {"name": "x2", "type": "continuous", "lower": 0, "upper": 15},
            ],
            "objectives": [{"name": "y", "direction": "maximize"}],
            "workflow": [{"kind": "furnace", "action": "measure"}],
            "instruments": [
                {"name": "furnace-1", "kind": "furnace", "address": "tcp://127.0.0.1:1"}
            ],
            "planner": {"name": "sobol"},
            "budget": {"max_experiments": budget},
            "reliability": {"command_poll_s": 0.05},
        }
    )


def furnace() -> SimulatedFurnaceDriver:
    sim = SimulatedInstrumentSpec(driver="sim-furnace", world="branin", duration_s=DURATION_S)
    return SimulatedFurnaceDriver("furnace-1", sim)


class _Quit(Exception):
    """Ends a controller run from the test."""


Operate = Callable[[CampaignController, SimulatedFurnaceDriver], Awaitable[None]]


async def run_with(db: str, driver: SimulatedFurnaceDriver, operate: Operate) -> dict[str, Any]:
    server = InstrumentServer(driver, "tcp://127.0.0.1:*")
    endpoints = {server.name: await server.start()}
    ctl = CampaignController(db, "hot", endpoints, ControllerOptions(use_ray_planner=False))
    try:
        task = asyncio.create_task(ctl.run())
        try:
            await operate(ctl, driver)
        except BaseException:
            task.cancel()
            raise
        return await task
    finally:
        ctl.dispose()
        await server.stop()


async def until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def command(db: str, what: str) -> str:
    out = await asyncio.to_thread(send_command, db, "hot", what, wait_s=20.0)
    assert out.status == CommandStatus.APPLIED, out
    return out.result or ""


def new_db(tmp_path: Path, budget: int) -> str:
    db = f"sqlite:///{tmp_path / 'estop.db'}"
    engine = make_engine(db)
    migrate(engine)
    with transaction(session_factory(engine)) as s:
        create_campaign(s, spec(budget), seed=3, max_experiments=budget)
    engine.dispose()
    return db


def rows(db: str) -> tuple[CampaignStatus, list[ExperimentRow], list[StepRow], list[EventRow]]:
    engine = make_engine(db)
    try:
        with transaction(session_factory(engine)) as s:
            camp = s.scalars(select(CampaignRow)).one()
            exps = list(s.scalars(select(ExperimentRow).order_by(ExperimentRow.id)))
            steps = list(s.scalars(select(StepRow).order_by(StepRow.id)))
            evs = list(s.scalars(select(EventRow).order_by(EventRow.id)))
            s.expunge_all()
            return camp.status, exps, steps, evs
    finally:
        engine.dispose()


def test_estop_cancels_the_long_action_makes_it_safe_and_holds_until_reset(
    tmp_path: Path,
) -> None:
    db = new_db(tmp_path, budget=1)
    seen: dict[str, Any] = {}

    async def operate(ctl: CampaignController, f: SimulatedFurnaceDriver) -> None:
        await until(lambda: f.heater_on)  # the first action is running
        result = await command(db, "estop")
        seen["result"] = result
        # the driver reported its safe state before the command was marked applied
        assert f.safe_states == 1
        assert f.state["mode"] == "ramping_down"
        assert not f.state["heater_on"]
        await until(lambda: not ctl.book.in_flight)
        status, exps, steps, _ = rows(db)
        assert status == CampaignStatus.ESTOPPED
        assert [e.status for e in exps] == [ExperimentStatus.INTERRUPTED]
        assert [(st.status, st.attempt) for st in steps] == [(StepStatus.FAILED, 1)]
        assert (steps[0].error or "").startswith("cancelled: emergency stop by cli:")
        # nothing starts while stopped, not even on resume
        runs = f.runs
        refused = await asyncio.to_thread(send_command, db, "hot", "resume", wait_s=20.0)
        assert refused.status == CommandStatus.REFUSED
        assert "ESTOPPED" in (refused.result or "")
        await asyncio.sleep(DURATION_S / 2)
        assert f.runs == runs
        assert not f.heater_on
        assert len(rows(db)[2]) == 1
        # reset -> PAUSED; the operator re-runs the cancelled experiment and resumes
        await command(db, "reset")
        assert rows(db)[0] == CampaignStatus.PAUSED
        await ctl.resolve(exps[0].id, "rerun", "operator:test")
        await asyncio.sleep(0.2)
        assert f.runs == runs  # still paused
        await command(db, "resume")

    result = asyncio.run(run_with(db, furnace(), operate))

    assert result["status"] == "COMPLETED"
    assert "1 step(s) cancelled; safe state reported by furnace-1" in seen["result"]
    status, exps, steps, evs = rows(db)
    assert status == CampaignStatus.COMPLETED
    # nothing lost: the cancelled attempt stays recorded beside the re-run that completed
    assert [e.status for e in exps] == [ExperimentStatus.COMPLETED]
    assert [(st.status, st.attempt, st.rerun) for st in steps] == [
        (StepStatus.FAILED, 1, False),
        (StepStatus.COMPLETED, 2, True),
    ]
    kinds = [e.kind for e in evs]
    assert kinds.index("campaign.estopped") < kinds.index("estop.instrument")
    assert kinds.index("estop.instrument") < kinds.index("campaign.paused")
    [safe] = [e for e in evs if e.kind == "estop.instrument"]
    assert safe.data["safe"] is True
    assert safe.data["cancelled"] == {steps[0].request_id: "cancelled"}
    assert safe.data["description"].startswith("heater off: ramping down from 850 degC")
    assert "alarm.decision_needed" in kinds


def test_a_restarted_controller_keeps_an_estopped_campaign_stopped(tmp_path: Path) -> None:
    db = new_db(tmp_path, budget=2)
    f = furnace()

    async def stop_then_quit(ctl: CampaignController, f: SimulatedFurnaceDriver) -> None:
        await until(lambda: f.heater_on)
        await command(db, "estop")
        await until(lambda: not ctl.book.in_flight)
        raise _Quit  # the controller goes away (its run task is cancelled)

    with contextlib.suppress(_Quit):
        asyncio.run(run_with(db, f, stop_then_quit))
    assert rows(db)[0] == CampaignStatus.ESTOPPED
    runs = f.runs

    async def watch(ctl: CampaignController, f: SimulatedFurnaceDriver) -> None:
        await until(lambda: f.safe_states == 2)  # the restart sent the safe state again
        await asyncio.sleep(DURATION_S / 2)
        assert f.runs == runs  # nothing started
        assert ctl.estop.active
        await command(db, "abort")  # an ESTOPPED campaign may be given up

    result = asyncio.run(run_with(db, f, watch))
    assert result["status"] == "ABORTED"
    status, exps, steps, _ = rows(db)
    assert status == CampaignStatus.ABORTED
    assert [e.status for e in exps] == [ExperimentStatus.INTERRUPTED]  # awaiting a decision
    assert len(steps) == 1
