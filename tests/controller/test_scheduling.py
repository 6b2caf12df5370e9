"""Resources, sample containers, waiting reasons and planners that run out, on the campaign
loop in one process (planner on a thread, no Ray) against real instrument servers."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from controller.loop import CampaignController, ControllerOptions
from controller.store import (
    add_experiment,
    add_measurements,
    add_step,
    create_campaign,
    events,
    get_campaign,
    make_engine,
    migrate,
    session_factory,
    set_experiment_status,
    set_step_status,
    transaction,
)
from controller.store.samples import move_sample
from instruments.driver import ActionSpec, Driver, OutputSpec, ParameterLimit, register_driver
from instruments.server import InstrumentServer
from models.campaign import CampaignSpec
from models.errors import InstrumentError
from models.params import ParamValue
from models.records import Decision, Measurement, Proposal
from models.status import ExperimentStatus, SampleState, StepStatus
from models.tables import ExperimentRow, SampleRow, StepRow
from planners.base import Planner, PlannerOptions, register_planner

STEP_S = 0.04
MELTS_ABOVE_C = 800.0


def truth(temperature_c: float) -> float:
    return -(((temperature_c - 600.0) / 100.0) ** 2)


def _limit() -> list[ParameterLimit]:
    return [ParameterLimit(name="temperature_c", minimum=100, maximum=900)]


@register_driver("test-slow-furnace")
class SlowFurnace(Driver):
    """Anneals for a while; a sample above 800 degC melts."""

    version = "1"

    def actions(self) -> list[ActionSpec]:
        return [ActionSpec(name="anneal", parameters=_limit(), outputs=[OutputSpec(name="g")])]

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        await asyncio.sleep(STEP_S)
        t = float(parameters["temperature_c"])
        if t > MELTS_ABOVE_C:
            raise InstrumentError(self.name, "action_failed", "sample melted")
        return [Measurement("g", t / 10)]


@register_driver("test-slow-meter")
class SlowMeter(Driver):
    """Measures the annealed sample for a while."""

    version = "1"

    def actions(self) -> list[ActionSpec]:
        outputs = [OutputSpec(name="conductivity")]
        return [ActionSpec(name="measure", parameters=_limit(), outputs=outputs, retry_safe=True)]

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        await asyncio.sleep(STEP_S)
        return [Measurement("conductivity", truth(float(parameters["temperature_c"])))]


class _ListOptions(PlannerOptions):
    temperatures: list[float]


@register_planner("test-list")
class ListPlanner(Planner):
    """Proposes the listed temperatures in order, then nothing (saying why)."""

    version = "1"
    Options = _ListOptions

    def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]] = ()) -> Decision:
        t0 = time.perf_counter()
        self.check_ask(n, pending)
        temps: list[float] = list(self.options.temperatures)  # type: ignore[attr-defined]
        used = len(self.observations) + len(pending)
        left = temps[used : used + n]
        details = {} if left else {"finished": f"all {len(temps)} temperatures tried"}
        props = [Proposal({"temperature_c": t}, origin="list") for t in left]
        return self.decision(props, len(pending), t0, details)


TEMPERATURES = [300.0, 450.0, 600.0, 850.0, 700.0, 500.0, 550.0]


def spec(prefetch: int = 4) -> CampaignSpec:
    return CampaignSpec.model_validate(
        {
            "campaign": {"name": "anneal", "seed": 3},
            "parameters": [
                {"name": "temperature_c", "type": "continuous", "lower": 100, "upper": 900}
            ],
            "objectives": [{"name": "conductivity", "direction": "maximize"}],
            "workflow": [
                {"kind": "furnace", "action": "anneal", "needs": ["robot-arm"]},
                {"kind": "meter", "action": "measure", "needs": ["robot-arm"]},
            ],
            "instruments": [
                {"name": "furnace-1", "kind": "furnace", "address": "tcp://127.0.0.1:1"},
                {"name": "furnace-2", "kind": "furnace", "address": "tcp://127.0.0.1:1"},
                {"name": "meter-1", "kind": "meter", "address": "tcp://127.0.0.1:1"},
            ],
            "resources": [
                {"name": "robot-arm", "capacity": 1},
                {"name": "crucible", "units": ["A", "B", "C"]},
            ],
            "sample_container": "crucible",
            "planner": {
                "name": "test-list",
                "prefetch": prefetch,
                "options": {"temperatures": TEMPERATURES},
            },
            "budget": {"max_experiments": 50, "max_failures": 50},
        }
    )


Operate = Callable[[CampaignController, str], Awaitable[None]]


def run_campaign(
    db: str, campaign: CampaignSpec, operate: Operate | None = None, *, fresh: bool = True
) -> dict[str, Any]:
    if fresh:
        engine = make_engine(db)
        migrate(engine)
        with transaction(session_factory(engine)) as s:
            create_campaign(s, campaign, seed=3, max_experiments=campaign.budget.max_experiments)
        engine.dispose()

    async def go() -> dict[str, Any]:
        servers = [
            InstrumentServer(SlowFurnace("furnace-1"), "tcp://127.0.0.1:*"),
            InstrumentServer(SlowFurnace("furnace-2"), "tcp://127.0.0.1:*"),
            InstrumentServer(SlowMeter("meter-1"), "tcp://127.0.0.1:*"),
        ]
        endpoints = {srv.name: await srv.start() for srv in servers}
        try:
            ctl = CampaignController(db, "anneal", endpoints, ControllerOptions(False))
            try:
                task = asyncio.create_task(ctl.run())
                if operate is not None:
                    await operate(ctl, db)
                return await task
            finally:
                ctl.dispose()
        finally:
            for srv in servers:
                await srv.stop()

    return asyncio.run(go())


def _max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    return max(itertools.accumulate(d for _, d in edges), default=0)


def test_resources_are_never_over_capacity_and_the_planner_ends_the_campaign(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    seen: dict[str, set[str]] = {"progress": set(), "store": set()}

    async def operate(ctl: CampaignController, url: str) -> None:
        engine = make_engine(url)
        try:
            while ctl.progress()["completed"] + ctl.progress()["failed"] < len(TEMPERATURES):
                seen["progress"] |= set(ctl.progress()["waiting"].values())
                with transaction(session_factory(engine)) as s:
                    seen["store"] |= set(
                        s.scalars(select(ExperimentRow.waiting_for).where(
                            ExperimentRow.waiting_for.is_not(None)))
                    )  # fmt: skip
                await asyncio.sleep(0.01)
        finally:
            engine.dispose()

    result = run_campaign(db, spec(), operate)

    assert result["status"] == "COMPLETED"
    assert result["stop_reason"] == f"all {len(TEMPERATURES)} temperatures tried"
    assert (result["completed"], result["failed"]) == (len(TEMPERATURES) - 1, 1)
    assert result["held"] == {}
    assert any("robot-arm" in why for why in seen["progress"]), seen
    assert any("crucible" in why for why in seen["progress"]), seen
    assert seen["store"] & seen["progress"], seen
    engine = make_engine(db)
    with transaction(session_factory(engine)) as s:
        exps = s.scalars(select(ExperimentRow).order_by(ExperimentRow.id)).all()
        assert len(exps) == len(TEMPERATURES)  # the planner was never asked past its list
        assert all(e.waiting_for is None for e in exps)
        steps = s.scalars(select(StepRow)).all()
        # Every step needs the one robot arm: no two steps ever overlapped.
        spans = [(st.sent_at, st.finished_at) for st in steps]
        assert all(a is not None and b is not None for a, b in spans)
        assert _max_overlap(spans) == 1  # type: ignore[arg-type]
        # At most three experiments (three crucibles) between first step and last.
        by_exp: dict[int, list[StepRow]] = {}
        for st in steps:
            by_exp.setdefault(st.experiment_id, []).append(st)
        lives = [
            (min(st.sent_at for st in sts), max(st.finished_at for st in sts))  # type: ignore[type-var]
            for sts in by_exp.values()
        ]
        assert _max_overlap(lives) <= 3  # type: ignore[arg-type]
        samples = {r.experiment_id: r for r in s.scalars(select(SampleRow))}
        for e in exps:
            sample = samples[e.id]
            assert sample.label in {"A", "B", "C"}
            assert sample.container == "crucible"
            assert sample.location == "storage"
            done = e.status == ExperimentStatus.COMPLETED
            assert sample.state == (SampleState.MEASURED if done else SampleState.DISCARDED)
        campaign = get_campaign(s, "anneal")
        assert campaign is not None
        moves = [ev for ev in events(s, campaign.id) if ev.kind == "sample.moved"]
        for e in exps:
            mine = [ev.data for ev in moves if ev.experiment_id == e.id]
            path = ["storage", "furnace", "meter", "storage"]
            if e.status != ExperimentStatus.COMPLETED:
                path = ["storage", "furnace", "storage"]
            assert [m["to"].split("-")[0] for m in mine] == path[1:]
    engine.dispose()


def test_a_restarted_controller_keeps_each_container_with_its_experiment(tmp_path: Path) -> None:
    # The store as a crashed controller left it: experiment 1 annealed in crucible B and
    # waits for the meter.
    db = f"sqlite:///{tmp_path / 'c.db'}"
    engine = make_engine(db)
    migrate(engine)
    with transaction(session_factory(engine)) as s:
        campaign = create_campaign(s, spec(prefetch=2), seed=3, max_experiments=50)
        exp = add_experiment(s, campaign.id, {"temperature_c": 650.0})
        set_experiment_status(s, exp, ExperimentStatus.QUEUED)
        set_experiment_status(s, exp, ExperimentStatus.RUNNING)
        step = add_step(
            s, exp, index=0, kind="furnace", action="anneal", parameters={}, request_id="old-1"
        )
        set_step_status(s, step, StepStatus.RUNNING)
        set_step_status(s, step, StepStatus.COMPLETED)
        add_measurements(s, step, [Measurement("g", 65.0)])
        move_sample(s, campaign.id, exp.id, to="furnace-1", step=0, action="anneal",
                    label="B", container="crucible")  # fmt: skip
        campaign_id, first = campaign.id, exp.id
    engine.dispose()

    result = run_campaign(db, spec(prefetch=2), fresh=False)

    assert result["status"] == "COMPLETED"
    engine = make_engine(db)
    with transaction(session_factory(engine)) as s:
        row = s.get_one(ExperimentRow, first)
        assert row.status == ExperimentStatus.COMPLETED
        mine = s.scalars(select(SampleRow).where(SampleRow.experiment_id == first)).one()
        assert (mine.label, mine.state) == ("B", SampleState.MEASURED)
        log = events(s, campaign_id)
        freed = max(ev.id for ev in log if ev.experiment_id == first and ev.kind == "sample.moved")
        # Nobody else was put in crucible B before experiment 1 gave it back.
        for ev in log:
            created = ev.kind == "sample.moved" and ev.data.get("created", False)
            if created and ev.experiment_id != first and ev.id < freed:
                assert ev.data["label"] != "B", ev.message
    engine.dispose()


def test_a_planner_with_nothing_to_propose_completes_the_campaign_at_once(
    tmp_path: Path,
) -> None:
    data = spec().model_dump(mode="json")
    data["planner"]["options"] = {"temperatures": []}
    campaign = CampaignSpec.model_validate(data)
    result = run_campaign(f"sqlite:///{tmp_path / 'c.db'}", campaign)
    assert result["status"] == "COMPLETED"
    assert result["stop_reason"] == "all 0 temperatures tried"
    assert result["completed"] == 0
