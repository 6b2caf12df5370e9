"""No out-of-limit value ever reaches a simulated instrument, whatever the planner proposes.

A planner registered here proposes hypothesis-generated points, many outside the campaign's
bounds, outside the instruments' declared limits, or changing a rate-limited input faster
than allowed. The real :class:`~controller.loop.CampaignController` runs them against real
instrument servers hosting the simulated objective station; the servers record every
``submit`` they *receive* (before their own checks), and the test checks each received value
against the limits the instrument declared. Refused proposals must be recorded as
``safety.refused`` events, abandoned, and told to the planner as infeasible.

The counts (proposals, refused, sent, out-of-limit sent) are printed for
``docs/reliability.md``.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from controller.loop import CampaignController, ControllerOptions
from controller.safety import SafetyGate
from controller.store import create_campaign, make_engine, migrate, session_factory, transaction
from instruments.driver import InstrumentDescription
from instruments.protocol import Message
from instruments.server import Frames, InstrumentServer
from models.campaign import CampaignSpec
from models.errors import PlannerError
from models.params import ParamValue
from models.records import Decision, Observation, Proposal
from models.status import ExperimentStatus
from models.tables import EventRow, ExperimentRow
from planners.base import Planner, PlannerOptions, register_planner
from sim.drivers import make_driver
from tests.integration.helpers import record_figures

COUNTS: Counter[str] = Counter()

RATE_X2 = 1e-6
"""Declared rate limit of x2 (per second): effectively, x2 may not change at all."""


@register_planner("test-wild-proposer")
class WildPlanner(Planner):
    """Proposes the points of its ``points`` option in order, then gives up.

    It checks nothing: proposals may lie anywhere. What it is told is kept in ``told``.
    """

    version = "1"
    told: ClassVar[list[Observation]] = []

    class Options(PlannerOptions):
        points: list[dict[str, float]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._next = 0

    def ask(self, n: int, pending: Sequence[Mapping[str, ParamValue]] = ()) -> Decision:
        points: list[dict[str, float]] = self.options.points  # type: ignore[attr-defined]
        if self._next >= len(points):
            raise PlannerError("no more points")
        chosen = points[self._next : self._next + n]
        self._next += len(chosen)
        return self.decision(
            [Proposal(parameters=dict(p), origin="wild") for p in chosen], len(pending), 0.0, {}
        )

    def tell(self, observations: Sequence[Observation]) -> None:
        # Keeps everything, inside the space or not (the base class refuses points outside).
        WildPlanner.told.extend(observations)


class SpyServer(InstrumentServer):
    """An instrument server that records the parameters of every submit it receives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[dict[str, Any]] = []

    async def _on_submit(self, envelope: Frames, msg: Message) -> None:
        params = msg.body.get("parameters")
        self.received.append(dict(params) if isinstance(params, dict) else {"?": params})
        await super()._on_submit(envelope, msg)


def campaign(points: list[dict[str, float]]) -> CampaignSpec:
    def station(name: str, x1_max: float) -> dict[str, Any]:
        limits = {"x1": {"minimum": -2.0, "maximum": x1_max}, "x2": {"max_rate_per_s": RATE_X2}}
        return {
            "name": name,
            "kind": "station",
            "simulated": {"world": "branin", "options": {"limits": limits}},
        }

    return CampaignSpec.model_validate(
        {
            "campaign": {"name": "wild", "seed": 1},
            "parameters": [
                {"name": "x1", "type": "continuous", "lower": -5, "upper": 10},
                {"name": "x2", "type": "continuous", "lower": 0, "upper": 15},
            ],
            "objectives": [{"name": "y", "direction": "maximize"}],
            "workflow": [{"kind": "station", "action": "measure"}],
            "instruments": [station("station-1", 5.0), station("station-2", 3.0)],
            "planner": {"name": "test-wild-proposer", "options": {"points": points}},
            "budget": {"max_experiments": len(points) + 1},
        }
    )


def run(spec: CampaignSpec, db: str) -> dict[str, SpyServer]:
    engine = make_engine(db)
    migrate(engine)
    with transaction(session_factory(engine)) as s:
        create_campaign(s, spec, seed=1, max_experiments=spec.budget.max_experiments)
    engine.dispose()

    async def go() -> dict[str, SpyServer]:
        servers = {}
        for inst in spec.instruments:
            assert inst.simulated is not None
            driver = make_driver(inst.name, inst.simulated)
            servers[inst.name] = SpyServer(driver, "tcp://127.0.0.1:*")
        endpoints = {name: await srv.start() for name, srv in servers.items()}
        options = ControllerOptions(use_ray_planner=False, max_planner_errors=1)
        ctl = CampaignController(db, "wild", endpoints, options)
        try:
            result = await ctl.run()
            assert result["stop_reason"] == "planner failed: no more points"
        finally:
            ctl.dispose()
            for srv in servers.values():
                await srv.stop()
        return servers

    return asyncio.run(go())


def within(description: InstrumentDescription, params: Mapping[str, Any]) -> bool:
    try:
        description.action("measure").check(params)
    except ValueError:
        return False
    return True


coordinate = st.floats(min_value=-50, max_value=50, allow_nan=False) | st.sampled_from(
    [-5.0, -2.0, -2.000001, 0.0, 3.0, 3.000001, 5.0, 10.0, 15.0, 15.5]
)
points_strategy = st.lists(
    st.fixed_dictionaries(
        {"x1": coordinate, "x2": st.sampled_from([1.0, 1.0, 1.0, 2.0, 1.0 + 1e-3, -1.0, 20.0])}
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,  # the same proposals on every run: the figures quoted are reproducible
    suppress_health_check=[HealthCheck.too_slow],
)
@given(points=points_strategy)
def test_no_out_of_limit_value_reaches_an_instrument(points: list[dict[str, float]]) -> None:
    WildPlanner.told.clear()
    spec = campaign(points)
    with tempfile.TemporaryDirectory() as d:
        db = f"sqlite:///{Path(d) / 'wild.db'}"
        servers = run(spec, db)
        engine = make_engine(db)
        with transaction(session_factory(engine)) as s:
            exps = s.scalars(select(ExperimentRow)).all()
            refusals = s.scalars(select(EventRow).where(EventRow.kind == "safety.refused")).all()
            abandoned = [e for e in exps if e.status == ExperimentStatus.ABANDONED]
            completed = [e for e in exps if e.status == ExperimentStatus.COMPLETED]
            assert len(exps) == len(points)
            assert sorted(e.id for e in abandoned) == sorted(ev.experiment_id for ev in refusals)
            COUNTS["refused_rate"] += sum("max rate" in ev.data["limit"] for ev in refusals)
        engine.dispose()

    sent = 0
    for srv in servers.values():
        description = srv.driver.describe()
        for params in srv.received:
            sent += 1
            if not within(description, params):
                COUNTS["out_of_limit_sent"] += 1
            assert within(description, params), f"{srv.name} received {params}"
        # the rate limit: x2 never changed on an instrument once it was set
        x2 = [p["x2"] for p in srv.received]
        assert all(math.isclose(v, x2[0], abs_tol=1e-3) for v in x2), x2
    assert sent == len(completed)  # everything let through ran; nothing was sent twice
    infeasible = [o for o in WildPlanner.told if not o.feasible]
    assert sorted(o.experiment_id or 0 for o in infeasible) == sorted(e.id for e in abandoned)
    COUNTS["proposals"] += len(points)
    COUNTS["refused"] += len(abandoned)
    COUNTS["sent"] += sent
    outside = sum(not within(servers["station-2"].driver.describe(), p) for p in points)
    COUNTS["outside_static_limits"] += outside


def test_the_spy_would_see_out_of_limit_values_without_the_gate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check above can fail: with the gate disabled, bad values reach the servers."""
    monkeypatch.setattr(SafetyGate, "check_proposal", lambda self, point: dict(point))
    monkeypatch.setattr(SafetyGate, "check_dispatch", lambda self, inst, index, params: None)
    WildPlanner.told.clear()
    points = [{"x1": 0.0, "x2": 1.0}, {"x1": 9.0, "x2": 1.0}, {"x1": 0.0, "x2": 14.0}]
    with tempfile.TemporaryDirectory() as d:
        servers = run(campaign(points), f"sqlite:///{Path(d) / 'open.db'}")
    received = [(srv, p) for srv in servers.values() for p in srv.received]
    assert any(not within(srv.driver.describe(), p) for srv, p in received)


@pytest.fixture(scope="module", autouse=True)
def _record_counts() -> Iterator[None]:
    """After the module's tests: record the figures docs/reliability.md quotes (see
    ``benchmarks/reliability.py``); the tests above assert what the figures count."""
    yield
    record_figures("safety-gate", dict(sorted(COUNTS.items())))
    print(
        f"\nsafety gate: {COUNTS['proposals']} proposals "
        f"({COUNTS['outside_static_limits']} outside the declared limits), "
        f"{COUNTS['refused']} refused ({COUNTS['refused_rate']} for the rate limit), "
        f"{COUNTS['sent']} sent, "
        f"{COUNTS['out_of_limit_sent']} out-of-limit values sent"
    )
