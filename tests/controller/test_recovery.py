"""Recovery at controller start (controller/recovery.py), against real servers on loopback:
a step whose request the instrument no longer knows is re-run, and the lost request is
cancelled at the instrument, so that a copy of its submit arriving late never runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from controller.loop import CampaignController, ControllerOptions
from controller.store import create_campaign, make_engine, migrate, session_factory, transaction
from instruments.client import InstrumentClient
from instruments.driver import ActionSpec, Driver, OutputSpec, ParameterLimit, register_driver
from instruments.protocol import RequestStatus
from instruments.server import InstrumentServer
from models.campaign import CampaignSpec
from models.records import Measurement
from models.status import StepStatus
from models.tables import EventRow, StepRow


@register_driver("recovery-test-probe")
class SlowProbe(Driver):
    """Measures ``-(x - 0.3)^2``, taking a while; safe to run again."""

    version = "1"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ran: list[str] = []  # the "tag" of each run

    def actions(self) -> list[ActionSpec]:
        return [
            ActionSpec(
                name="measure",
                parameters=[ParameterLimit(name="x", minimum=0, maximum=1)],
                outputs=[OutputSpec(name="response")],
                timeout_s=10.0,
                retry_safe=True,
            )
        ]

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        self.ran.append(str(parameters["x"]))
        await asyncio.sleep(0.3)
        return [Measurement("response", -((float(parameters["x"]) - 0.3) ** 2))]


def spec() -> CampaignSpec:
    return CampaignSpec.model_validate(
        {
            "campaign": {"name": "recover", "seed": 1},
            "parameters": [{"name": "x", "type": "continuous", "lower": 0, "upper": 1}],
            "objectives": [{"name": "response", "direction": "maximize"}],
            "workflow": [{"kind": "probe", "action": "measure"}],
            "instruments": [{"name": "probe-1", "kind": "probe", "address": "tcp://127.0.0.1:1"}],
            "planner": {"name": "sobol"},
            "budget": {"max_experiments": 3},
            "reliability": {"heartbeat_s": 0.05, "backoff_s": 0.0},
        }
    )


Operate = Callable[[CampaignController, InstrumentServer], Awaitable[None]]


class _Crash(Exception):
    """Ends a controller's life from the test, as a power cut would."""


def run_once(db: str, operate: Operate) -> None:
    """One controller life against a fresh server (it knows no earlier request)."""

    async def go() -> None:
        server = InstrumentServer(SlowProbe("probe-1"), "tcp://127.0.0.1:*")
        endpoints = {server.name: await server.start()}
        ctl = CampaignController(db, "recover", endpoints, ControllerOptions(use_ray_planner=False))
        task = asyncio.create_task(ctl.run())
        try:
            await operate(ctl, server)
            await task
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            ctl.dispose()
            await server.stop()

    asyncio.run(asyncio.wait_for(go(), 60))


async def _until(predicate: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def _rows(db: str, table: type[Any]) -> list[Any]:
    engine = make_engine(db)
    try:
        with transaction(session_factory(engine)) as s:
            rows = list(s.scalars(select(table).order_by(table.id)))
            s.expunge_all()
            return rows
    finally:
        engine.dispose()


def test_a_lost_request_is_rerun_and_cancelled_so_a_late_copy_never_runs(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    engine = make_engine(db)
    migrate(engine)
    with transaction(session_factory(engine)) as s:
        create_campaign(s, spec(), seed=1, max_experiments=3)
    engine.dispose()
    lost: dict[str, Any] = {}

    async def crash_mid_step(ctl: CampaignController, server: InstrumentServer) -> None:
        await _until(lambda: any(s.busy for s in ctl.instruments.values()), "a step in flight")
        running = [st for st in _rows(db, StepRow) if st.status == StepStatus.RUNNING]
        lost["rid"], lost["parameters"] = running[0].request_id, dict(running[0].parameters)
        raise _Crash  # the controller dies with the step in flight

    with pytest.raises(_Crash):
        run_once(db, crash_mid_step)

    async def restarted(ctl: CampaignController, server: InstrumentServer) -> None:
        rid = lost["rid"]

        def cancelled() -> bool:
            return any(
                e.kind == "instrument.orphan_cancelled" and rid in e.message
                for e in _rows(db, EventRow)
            )

        await _until(cancelled, "the lost request to be cancelled at the instrument")
        # the original submit, delayed in the network, reaches the new server only now
        async with InstrumentClient(server.endpoint, timeout_s=5) as client:
            late = await client.submit(rid, "measure", lost["parameters"], wait_s=2)
        assert late.state is RequestStatus.CANCELLED
        assert late.started_at is None

    run_once(db, restarted)

    steps = _rows(db, StepRow)
    first = next(st for st in steps if st.request_id == lost["rid"])
    assert first.status == StepStatus.INTERRUPTED
    again = [st for st in steps if st.experiment_id == first.experiment_id and st.attempt > 1]
    assert [st.status for st in again] == [StepStatus.COMPLETED]
    assert again[0].rerun
    assert sum(st.status == StepStatus.COMPLETED for st in steps) == 3
