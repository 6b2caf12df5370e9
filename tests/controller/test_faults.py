"""Instrument faults against the real campaign loop (planner on a thread, no Ray), with real
instrument servers on loopback that inject faults: retries, quarantine, silence, alarms,
operator commands and approvals."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from controller.loop import CampaignController, ControllerOptions
from controller.store import (
    create_campaign,
    events,
    make_engine,
    migrate,
    session_factory,
    submit_command,
    transaction,
)
from instruments.driver import ActionSpec, Driver, OutputSpec, ParameterLimit, register_driver
from instruments.server import InstrumentServer
from models.campaign import CampaignSpec
from models.instrument_spec import FaultSpec
from models.records import Measurement
from models.status import CommandStatus, ExperimentStatus, InstrumentState, StepStatus
from models.tables import CampaignRow, CommandRow, EventRow, ExperimentRow, InstrumentRow
from sim.faults import Fault, FaultPlan, FaultyDriver, FaultyServer
from tests.integration.helpers import record_figures


def truth(x: float) -> float:
    """Noise-free response of the simulated sample."""
    return -((x - 0.3) ** 2)


@register_driver("fault-test-mixer")
class Mixer(Driver):
    """Makes a sample; not safe to run twice (it would use up precursor)."""

    version = "1"

    def actions(self) -> list[ActionSpec]:
        return [
            ActionSpec(
                name="mix",
                parameters=[ParameterLimit(name="x", minimum=0, maximum=1)],
                outputs=[OutputSpec(name="mass_mg")],
                timeout_s=1.0,
            )
        ]

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        await asyncio.sleep(0.02)
        return [Measurement("mass_mg", 10.0)]


@register_driver("fault-test-probe")
class Probe(Driver):
    """Measures the sample; safe to run again."""

    version = "1"

    def actions(self) -> list[ActionSpec]:
        return [
            ActionSpec(
                name="measure",
                parameters=[ParameterLimit(name="x", minimum=0, maximum=1)],
                outputs=[OutputSpec(name="response")],
                timeout_s=1.0,
                retry_safe=True,
            )
        ]

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        await asyncio.sleep(0.02)
        return [Measurement("response", truth(float(parameters["x"])))]


def campaign(budget: int, probes: int = 2, **extra: Any) -> CampaignSpec:
    instruments = [{"name": "mixer-1", "kind": "mixer", "address": "tcp://127.0.0.1:1"}]
    instruments += [
        {"name": f"probe-{i}", "kind": "probe", "address": "tcp://127.0.0.1:1"}
        for i in range(1, probes + 1)
    ]
    data: dict[str, Any] = {
        "campaign": {"name": "faults", "seed": 5},
        "parameters": [{"name": "x", "type": "continuous", "lower": 0, "upper": 1}],
        "objectives": [{"name": "response", "direction": "maximize"}],
        "workflow": [{"kind": "mixer", "action": "mix"}, {"kind": "probe", "action": "measure"}],
        "instruments": instruments,
        "planner": {"name": "sobol"},
        "budget": {"max_experiments": budget, "max_failures": 1000},
        "reliability": {
            "backoff_s": 0.05,
            "quarantine_s": 2.0,
            "heartbeat_s": 0.2,
            "silent_after_s": 1.0,
            "command_poll_s": 0.05,
        },
    }
    data.update(extra)
    return CampaignSpec.model_validate(data)


@dataclass
class Lab:
    """The servers of one test, by instrument name, and what their faults injected."""

    servers: dict[str, InstrumentServer] = field(default_factory=dict)
    plans: dict[str, FaultPlan] = field(default_factory=dict)


Operate = Callable[[CampaignController, Lab], Awaitable[None]]


def run(
    tmp_path: Path,
    spec: CampaignSpec,
    faults: dict[str, FaultSpec] | None = None,
    operate: Operate | None = None,
) -> tuple[str, dict[str, Any], Lab]:
    db = f"sqlite:///{tmp_path / 'faults.db'}"
    engine = make_engine(db)
    migrate(engine)
    with transaction(session_factory(engine)) as s:
        create_campaign(s, spec, seed=5, max_experiments=spec.budget.max_experiments)
    engine.dispose()
    lab = Lab()

    async def go() -> dict[str, Any]:
        for inst in spec.instruments:
            driver: Driver = Mixer(inst.name) if inst.kind == "mixer" else Probe(inst.name)
            fs = (faults or {}).get(inst.name)
            if fs is not None:
                plan = FaultPlan(fs, inst.name)
                lab.plans[inst.name] = plan
                driver = FaultyDriver(driver, plan, duration_s=0.02)
            lab.servers[inst.name] = FaultyServer(driver, "tcp://127.0.0.1:*")
        endpoints = {n: await srv.start() for n, srv in lab.servers.items()}
        options = ControllerOptions(use_ray_planner=False, rpc_timeout_s=0.5)
        ctl = CampaignController(db, "faults", endpoints, options)
        try:
            task = asyncio.create_task(ctl.run())
            if operate is not None:
                try:
                    await operate(ctl, lab)
                except BaseException:
                    task.cancel()
                    raise
            try:
                return await asyncio.wait_for(task, 120)
            except TimeoutError:
                slots = {
                    n: (sl.state, sl.busy, len(sl.resume)) for n, sl in ctl.instruments.items()
                }
                queues = {k: len(q) for k, q in ctl.book.ready.items()}
                raise AssertionError(
                    f"campaign did not finish: {ctl.progress()}; in flight "
                    f"{sorted(ctl.book.in_flight)}; queues {queues}; instruments {slots}"
                ) from None
        finally:
            ctl.dispose()
            for srv in lab.servers.values():
                await srv.stop()

    return db, asyncio.run(go()), lab


@pytest.fixture
def store() -> Iterator[Callable[[str], Any]]:
    engines: list[Any] = []

    def open_(db: str) -> Any:
        engine = make_engine(db)
        engines.append(engine)
        return session_factory(engine)

    yield open_
    for e in engines:
        e.dispose()


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_fault_plan_is_deterministic_and_follows_its_rates() -> None:
    spec = FaultSpec(error_rate=0.2, hang_rate=0.1, drop_rate=0.05, seed=11)
    a = [FaultPlan(spec, "x").draw()]
    plan1, plan2 = FaultPlan(spec, "x"), FaultPlan(spec, "x")
    draws1 = [plan1.draw() for _ in range(4000)]
    assert draws1 == [plan2.draw() for _ in range(4000)]
    assert a[0] == draws1[0]
    share = {f: draws1.count(f) / 4000 for f in Fault}
    assert share[Fault.ERROR] == pytest.approx(0.2, abs=0.03)
    assert share[Fault.HANG] == pytest.approx(0.1, abs=0.02)
    assert share[Fault.DROP] == pytest.approx(0.05, abs=0.015)
    assert share[Fault.CRASH] == 0
    assert draws1.count(None) / 4000 == pytest.approx(0.65, abs=0.03)


def test_every_fault_class_on_a_retry_safe_action_is_ridden_out(
    tmp_path: Path, store: Callable[[str], Any]
) -> None:
    """Errors, hangs, slow answers, garbled replies, schema-breaking results and network
    drops on both probes: the campaign completes its budget, every completed experiment
    carries the true value, and every step sent more than once is flagged as a re-run."""
    faults = {
        f"probe-{i}": FaultSpec(
            error_rate=0.1,
            hang_rate=0.05,
            slow_rate=0.05,
            slow_factor=3,
            malformed_rate=0.05,
            bad_result_rate=0.05,
            drop_rate=0.03,
            drop_s=0.3,
            seed=i,
        )
        for i in (1, 2)
    }
    spec = campaign(
        30,
        reliability={
            "backoff_s": 0.05,
            "max_attempts": 6,
            "quarantine_after": 50,
            "heartbeat_s": 0.2,
            "silent_after_s": 2.0,
            "command_poll_s": 0.05,
        },
    )
    db, result, lab = run(tmp_path, spec, faults)

    assert result["status"] == "COMPLETED"
    assert result["completed"] == 30
    injected = {f: sum(p.counts[f] for p in lab.plans.values()) for f in Fault}
    # which classes hit depends on which probe took which step; tests/sim/test_faults.py
    # injects each class on its own
    assert sum(injected.values()) >= 3, injected
    record_figures(
        "every-fault-class",
        {"injected": {f.value: n for f, n in injected.items()}, "completed": 30},
    )
    with transaction(store(db)) as s:
        exps = s.scalars(select(ExperimentRow)).all()
        done = [e for e in exps if e.status == ExperimentStatus.COMPLETED]
        assert len(done) == 30
        retried = 0
        for e in done:
            values = {m.name: m.value for m in e.measurements}
            assert values["response"] == pytest.approx(truth(e.parameters["x"]), abs=1e-12)
            probe_steps = [st for st in e.steps if st.index == 1]
            assert [st.attempt for st in probe_steps] == list(range(1, len(probe_steps) + 1))
            assert [st.status for st in probe_steps][-1] == StepStatus.COMPLETED
            assert all(st.rerun for st in probe_steps[1:])
            assert all(st.status != StepStatus.COMPLETED for st in probe_steps[:-1])
            retried += len(probe_steps) > 1
        assert retried > 0
        kinds = [ev.kind for ev in s.scalars(select(EventRow)).all()]
        assert "step.rerun" in kinds
        assert "instrument.fault" in kinds


def test_a_broken_instrument_is_quarantined_and_its_work_goes_to_the_other(
    tmp_path: Path, store: Callable[[str], Any]
) -> None:
    faults = {"probe-1": FaultSpec(error_rate=1.0)}
    db, result, lab = run(tmp_path, campaign(12), faults)

    assert result["status"] == "COMPLETED"
    assert result["completed"] == 12
    with transaction(store(db)) as s:
        exps = s.scalars(select(ExperimentRow)).all()
        for e in exps:
            if e.status == ExperimentStatus.COMPLETED:
                assert e.steps[-1].instrument == "probe-2"
        alarms = s.scalars(
            select(EventRow).where(EventRow.kind == "alarm.instrument_quarantined")
        ).all()
        assert alarms
        assert {a.instrument for a in alarms} == {"probe-1"}
        # Quarantined at the third fault in a row, the first time; every injected error was
        # counted once (transport hiccups on a loaded machine may add faults of their own).
        assert alarms[0].data["faults"] == 3
        injected = s.scalars(
            select(EventRow).where(
                EventRow.kind == "instrument.fault", EventRow.instrument == "probe-1"
            )
        ).all()
        assert (
            sum(ev.data["code"] == "sim_fault" for ev in injected)
            == (lab.plans["probe-1"].counts[Fault.ERROR])
        )


def test_a_silent_instrument_is_unknown_never_idle_and_comes_back(
    tmp_path: Path, store: Callable[[str], Any]
) -> None:
    states: list[InstrumentState] = []

    async def operate(ctl: CampaignController, lab: Lab) -> None:
        await wait_for(lambda: ctl.progress()["completed"] >= 2)
        server = lab.servers["probe-2"]
        assert isinstance(server, FaultyServer)
        server.drop_for(2.5)
        slot = ctl.instruments["probe-2"]
        await wait_for(lambda: slot.state == InstrumentState.UNKNOWN, 10)
        states.append(slot.state)
        await wait_for(lambda: slot.state != InstrumentState.UNKNOWN, 10)
        states.append(slot.state)

    db, result, _ = run(tmp_path, campaign(150), operate=operate)

    assert result["status"] == "COMPLETED"
    assert states[0] == InstrumentState.UNKNOWN
    assert states[1] in (InstrumentState.IDLE, InstrumentState.BUSY)
    with transaction(store(db)) as s:
        kinds = [
            (ev.kind, ev.instrument)
            for ev in s.scalars(select(EventRow).order_by(EventRow.id)).all()
        ]
        silent = kinds.index(("alarm.instrument_silent", "probe-2"))
        assert ("instrument.back", "probe-2") in kinds[silent:]
        rows = {r.name: r for r in s.scalars(select(InstrumentRow)).all()}
        assert set(rows) == {"mixer-1", "probe-1", "probe-2"}
        assert rows["probe-2"].last_seen_at is not None


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    refuse_first = 1

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if _Hook.refuse_first > 0:
            _Hook.refuse_first -= 1
            self.send_response(503)
        else:
            _Hook.received.append(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_alarms_reach_the_webhook_after_it_recovers(
    tmp_path: Path, store: Callable[[str], Any]
) -> None:
    httpd = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _Hook.received, _Hook.refuse_first = [], 1
    url = f"http://127.0.0.1:{httpd.server_port}/hook"

    async def operate(ctl: CampaignController, lab: Lab) -> None:
        await wait_for(lambda: bool(_Hook.received), 30)

    try:
        spec = campaign(10, alarms={"webhook": url, "webhook_attempts": 4})
        run(tmp_path, spec, {"probe-1": FaultSpec(error_rate=1.0)}, operate)
    finally:
        httpd.shutdown()
    first = _Hook.received[0]
    assert first["campaign"] == "faults"
    assert first["alarm"] == "instrument_quarantined"
    assert first["instrument"] == "probe-1"


def _command(db: str, store: Callable[[str], Any], command: str, **args: Any) -> int:
    with transaction(store(db)) as s:
        cid = s.scalars(select(CampaignRow.id)).one()
        return submit_command(s, cid, command, args, actor="ada").id


def _command_state(db: str, store: Callable[[str], Any], cid: int) -> tuple[str, str | None]:
    with transaction(store(db)) as s:
        row = s.get_one(CommandRow, cid)
        return row.status.value, row.result


def test_operator_commands_reach_the_running_controller(
    tmp_path: Path, store: Callable[[str], Any]
) -> None:
    db_path = f"sqlite:///{tmp_path / 'faults.db'}"
    seen: dict[str, Any] = {}

    async def operate(ctl: CampaignController, lab: Lab) -> None:
        await wait_for(lambda: ctl.progress()["completed"] >= 2)
        pause = _command(db_path, store, "pause")
        await wait_for(lambda: ctl.progress()["paused"])
        out = _command(db_path, store, "instrument_out", instrument="probe-1", reason="service")
        await wait_for(lambda: not ctl.instruments["probe-1"].in_service)
        bad = _command(db_path, store, "instrument_out", instrument="nope")
        resume = _command(db_path, store, "resume")
        await wait_for(lambda: not ctl.progress()["paused"])
        done_before = ctl.progress()["completed"]
        await wait_for(lambda: ctl.progress()["completed"] >= done_before + 4)
        seen["ids"] = (pause, out, bad, resume)
        back = _command(db_path, store, "instrument_in", instrument="probe-1")
        await wait_for(lambda: ctl.instruments["probe-1"].in_service)
        seen["back"] = back
        seen["since_out"] = done_before

    db, result, _ = run(tmp_path, campaign(60), operate=operate)

    assert result["status"] == "COMPLETED"
    pause, out, bad, _resume = seen["ids"]
    assert _command_state(db, store, pause)[0] == CommandStatus.APPLIED
    assert _command_state(db, store, out)[0] == CommandStatus.APPLIED
    status, why = _command_state(db, store, bad)
    assert status == CommandStatus.REFUSED
    assert "nope" in (why or "")
    with transaction(store(db)) as s:
        applied = s.scalars(select(EventRow).where(EventRow.kind == "command.applied")).all()
        assert {e.actor for e in applied} == {"ada"}
        assert s.scalars(select(EventRow).where(EventRow.kind == "campaign.paused")).one().actor
        # while probe-1 was out, nothing was sent to it
        out_at = s.get_one(CommandRow, out).applied_at
        back_at = s.get_one(CommandRow, seen["back"]).applied_at
        assert out_at is not None
        assert back_at is not None
        steps = s.scalars(select(ExperimentRow)).all()
        for e in steps:
            for st in e.steps:
                if st.instrument == "probe-1" and st.sent_at is not None:
                    assert not out_at < st.sent_at < back_at


def test_proposals_wait_for_approval_and_rejected_ones_are_abandoned(
    tmp_path: Path, store: Callable[[str], Any]
) -> None:
    db_path = f"sqlite:///{tmp_path / 'faults.db'}"
    decided: dict[str, list[int]] = {"approved": [], "rejected": []}

    async def operate(ctl: CampaignController, lab: Lab) -> None:
        while ctl.progress()["completed"] < 6:
            await wait_for(lambda: bool(ctl.book.awaiting) or ctl.progress()["completed"] >= 6)
            waiting = sorted(ctl.book.awaiting)
            if not waiting:
                break
            # nothing waiting for approval has reached an instrument
            with transaction(store(db_path)) as s:
                for i in waiting:
                    exp = s.get_one(ExperimentRow, i)
                    assert exp.status == ExperimentStatus.PROPOSED
                    assert exp.steps == []
            if len(decided["rejected"]) < 2:
                _command(db_path, store, "reject", experiments=waiting[:1], reason="too hot")
                decided["rejected"] += waiting[:1]
                waiting = waiting[1:]
            if waiting:
                _command(db_path, store, "approve", experiments=waiting)
                decided["approved"] += waiting
            asked = set(waiting)
            await wait_for(lambda asked=asked: not (set(ctl.book.awaiting) & asked))

    db, result, _ = run(tmp_path, campaign(6, safety={"require_approval": True}), operate=operate)

    assert result["status"] == "COMPLETED"
    with transaction(store(db)) as s:
        for i in decided["rejected"]:
            exp = s.get_one(ExperimentRow, i)
            assert exp.status == ExperimentStatus.ABANDONED
            assert "too hot" in (exp.reason or "")
        completed = s.scalars(
            select(ExperimentRow.id).where(ExperimentRow.status == ExperimentStatus.COMPLETED)
        ).all()
        assert set(completed) <= set(decided["approved"])
        assert len(completed) == 6


def test_an_unsafe_action_whose_fate_is_lost_waits_for_an_operator(
    tmp_path: Path, store: Callable[[str], Any]
) -> None:
    """The mixer is not safe to run twice. It hangs and then drops off the network, so the
    cancel is never answered: the experiment waits INTERRUPTED, an alarm asks for a
    decision, and the operator's ``resolve rerun`` runs it again as a flagged re-run."""
    db_path = f"sqlite:///{tmp_path / 'faults.db'}"
    info: dict[str, int] = {}

    async def operate(ctl: CampaignController, lab: Lab) -> None:
        server = lab.servers["mixer-1"]
        assert isinstance(server, FaultyServer)
        await wait_for(lambda: lab.plans["mixer-1"].counts[Fault.HANG] > 0, 30)
        server.drop_for(3.0)  # the cancel at the 1-s deadline finds nobody
        await wait_for(
            lambda: any(ev.kind == "alarm.decision_needed" for ev in _events(db_path, store)),
            30,
        )
        with transaction(store(db_path)) as s:
            exp = s.scalars(
                select(ExperimentRow).where(ExperimentRow.status == ExperimentStatus.INTERRUPTED)
            ).one()
            info["exp"] = exp.id
        info["cmd"] = _command(db_path, store, "resolve", experiment=info["exp"], action="rerun")

    faults = {"mixer-1": FaultSpec(hang_rate=0.15, seed=3)}
    db, result, _ = run(tmp_path, campaign(8), faults, operate)

    assert result["status"] == "COMPLETED"
    assert _command_state(db, store, info["cmd"])[0] == CommandStatus.APPLIED
    with transaction(store(db)) as s:
        exp = s.get_one(ExperimentRow, info["exp"])
        mix = [st for st in exp.steps if st.index == 0]
        assert mix[0].status == StepStatus.INTERRUPTED
        assert mix[-1].rerun
        assert mix[-1].attempt == mix[0].attempt + 1


def _events(db: str, store: Callable[[str], Any]) -> list[EventRow]:
    with transaction(store(db)) as s:
        rows = list(events(s, s.scalars(select(CampaignRow.id)).one()))
        for r in rows:
            s.expunge(r)
        return rows
