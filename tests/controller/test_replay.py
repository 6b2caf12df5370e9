"""A restarted campaign makes exactly the decisions of the uninterrupted one.

The campaign runs on a real instrument server (an instant, deterministic station whose
declared limit on ``x1`` is narrower than the search space, so the safety gate refuses some
proposals) and every proposal waits for an operator, who rejects those with a large ``x2``.
The planner therefore learns refused and rejected points as infeasible, and its decision
seeds depend on what it holds. The same campaign is run once without interruption and once
with its controller cancelled at random moments and a new controller started on the same
store each time; the decisions table (points, seeds, training-set sizes) must agree.

A campaign whose every proposal is refused stops itself after
``reliability.max_refused_in_a_row`` refusals, with a ``no_progress`` alarm.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from controller.loop import CampaignController, ControllerOptions
from controller.store import create_campaign, make_engine, migrate, session_factory, transaction
from controller.store.queries import observations
from instruments.driver import ActionSpec, Driver, OutputSpec, ParameterLimit, register_driver
from instruments.server import InstrumentServer
from models.campaign import CampaignSpec
from models.errors import CampaignStateError
from models.records import Measurement
from models.status import CampaignStatus, ExperimentStatus
from models.tables import CampaignRow, DecisionRow, EventRow, ExperimentRow

X1_MAX = 0.7
"""The station's declared upper limit of ``x1`` (the space goes to 1): wider is refused."""

REJECT_X2_ABOVE = 0.7
"""The operator rejects every proposal with a larger ``x2``."""


@register_driver("test-replay-station")
class Station(Driver):
    """Measures ``y`` at once, a noise-free function of the point."""

    version = "1"

    def actions(self) -> list[ActionSpec]:
        return [
            ActionSpec(
                name="measure",
                parameters=[
                    ParameterLimit(name="x1", minimum=0.0, maximum=X1_MAX),
                    ParameterLimit(name="x2", minimum=0.0, maximum=1.0),
                ],
                outputs=[OutputSpec(name="y")],
                timeout_s=5,
                retry_safe=True,
            )
        ]

    async def run(self, action: str, parameters: Mapping[str, Any]) -> list[Measurement]:
        x1, x2 = float(parameters["x1"]), float(parameters["x2"])
        return [Measurement("y", -((x1 - 0.3) ** 2) - (x2 - 0.4) ** 2)]


def spec(
    planner: str,
    budget: int,
    *,
    approval: bool = True,
    **reliability: Any,
) -> CampaignSpec:
    return CampaignSpec.model_validate(
        {
            "campaign": {"name": "replay", "seed": 5},
            "parameters": [
                {"name": "x1", "type": "continuous", "lower": 0.0, "upper": 1.0},
                {"name": "x2", "type": "continuous", "lower": 0.0, "upper": 1.0},
            ],
            "objectives": [{"name": "y", "direction": "maximize"}],
            "workflow": [{"kind": "station", "action": "measure"}],
            "instruments": [
                {"name": "station-1", "kind": "station", "address": "tcp://127.0.0.1:1"}
            ],
            "planner": {"name": planner, "prefetch": 0},
            "budget": {"max_experiments": budget},
            "safety": {"require_approval": approval},
            "reliability": reliability,
        }
    )


Stop = Callable[[CampaignController], bool]


async def _operate(ctl: CampaignController, task: asyncio.Task[dict[str, Any]]) -> None:
    """The operator: approve each waiting proposal, or reject it when ``x2`` is large."""
    while not task.done():
        for exp_id, point in sorted(ctl.book.awaiting.items()):
            with contextlib.suppress(CampaignStateError):
                if float(point["x2"]) > REJECT_X2_ABOVE:
                    await ctl.reject([exp_id], "operator:ada", "x2 too high")
                else:
                    await ctl.approve([exp_id], "operator:ada")
        await asyncio.sleep(0.002)


def _decisions(sessions: sessionmaker[Session]) -> int:
    with transaction(sessions, read_only=True) as s:
        return int(s.scalar(select(func.count(DecisionRow.id))) or 0)


def run(db: str, campaign: CampaignSpec, kills: list[int], yields: list[int]) -> dict[str, Any]:
    """Run the campaign to its end; cancel its controller once the store holds
    ``kills[i]`` decisions (after ``yields[i]`` more loop turns) and start a new one."""
    engine = make_engine(db)
    migrate(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as s:
        create_campaign(s, campaign, seed=5, max_experiments=campaign.budget.max_experiments)

    async def go() -> dict[str, Any]:
        server = InstrumentServer(Station("station-1"), "tcp://127.0.0.1:*")
        endpoints = {"station-1": await server.start()}
        options = ControllerOptions(use_ray_planner=False)
        try:
            for kill, turns in [*zip(kills, yields, strict=True), (None, 0)]:
                ctl = CampaignController(db, "replay", endpoints, options)
                try:
                    task = asyncio.create_task(ctl.run())
                    operator = asyncio.create_task(_operate(ctl, task))
                    if kill is None:
                        result = await task
                        await operator
                        return result
                    while _decisions(sessions) < kill and not task.done():
                        await asyncio.sleep(0.001)
                    for _ in range(turns):
                        await asyncio.sleep(0)
                    if task.done():  # it ended before the kill: nothing to restart
                        await operator
                        return task.result()
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    # an approval or rejection under way dies with the controller: its
                    # planner's worker is shut down, its tell cancelled
                    with contextlib.suppress(asyncio.CancelledError):
                        await operator
                finally:
                    ctl.dispose()
            raise AssertionError("unreachable")
        finally:
            await server.stop()

    try:
        return asyncio.run(go())
    finally:
        engine.dispose()


def recorded(db: str) -> list[tuple[Any, ...]]:
    """Every decision: training-set size, pending, seed details, and the points proposed."""
    engine = make_engine(db)
    try:
        with transaction(session_factory(engine), read_only=True) as s:
            out = []
            for d in s.scalars(select(DecisionRow).order_by(DecisionRow.id)):
                exps = s.scalars(
                    select(ExperimentRow)
                    .where(ExperimentRow.decision_id == d.id)
                    .order_by(ExperimentRow.proposal_index)
                ).all()
                points = [sorted(e.parameters.items()) for e in exps]
                details = {
                    k: v
                    for k, v in d.details.items()
                    if k != "experiment_costs" and not k.startswith("seconds")  # timings
                }
                out.append((d.n_train, d.n_pending, d.seed, sorted(details.items()), points))
            return out
    finally:
        engine.dispose()


def reasons(db: str) -> list[str]:
    engine = make_engine(db)
    try:
        with transaction(session_factory(engine), read_only=True) as s:
            stmt = select(ExperimentRow.reason).where(
                ExperimentRow.status == ExperimentStatus.ABANDONED
            )
            return [r or "" for r in s.scalars(stmt)]
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("planner", ["random", "sobol"])
def test_a_restarted_campaign_makes_the_decisions_of_the_uninterrupted_one(
    tmp_path: Path, planner: str
) -> None:
    campaign = spec(planner, budget=10)
    straight_db = f"sqlite:///{tmp_path / 'straight.db'}"
    straight = run(straight_db, campaign, [], [])
    assert straight["status"] == "COMPLETED"
    expected = recorded(straight_db)
    why = reasons(straight_db)
    # the planner had refusals and rejections to learn from
    assert any(r.startswith("safety gate") for r in why), why
    assert any(r.startswith("rejected by") for r in why), why

    rng = random.Random(17)
    kills = sorted(rng.sample(range(2, len(expected)), 3))
    yields = [rng.randrange(0, 40) for _ in kills]
    cut_db = f"sqlite:///{tmp_path / 'cut.db'}"
    cut = run(cut_db, campaign, kills, yields)

    assert cut["status"] == "COMPLETED"
    got = recorded(cut_db)
    assert got == expected, f"kills at {kills} decisions (+{yields} loop turns)"
    # and the planner a restart would build knows what the live one knew, in order
    for db in (straight_db, cut_db):
        engine = make_engine(db)
        with transaction(session_factory(engine), read_only=True) as s:
            told = observations(s, 1, list(campaign.objectives))
        engine.dispose()
        assert sum(not o.feasible for o in told) == len(why)


def test_a_campaign_whose_every_proposal_is_refused_stops_with_an_alarm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the station accepts nothing of the space: every proposal is refused by the gate
    monkeypatch.setattr(
        Station,
        "actions",
        lambda self: [
            ActionSpec(
                name="measure",
                parameters=[ParameterLimit(name="x1", minimum=5.0, maximum=6.0)],
                outputs=[OutputSpec(name="y")],
                timeout_s=5,
            )
        ],
    )
    campaign = spec("random", budget=1000, approval=False, max_refused_in_a_row=7)
    db = f"sqlite:///{tmp_path / 'refused.db'}"
    result = run(db, campaign, [], [])

    assert result["status"] == "FAILED"
    assert "7 proposals were all refused" in result["stop_reason"]
    engine = make_engine(db)
    with transaction(session_factory(engine), read_only=True) as s:
        exps = s.scalars(select(ExperimentRow)).all()
        assert len(exps) == 7
        assert {e.status for e in exps} == {ExperimentStatus.ABANDONED}
        alarm = s.scalars(select(EventRow).where(EventRow.kind == "alarm.no_progress")).one()
        assert "x1" in alarm.message  # the last refusal's message names the parameter
        assert alarm.data["refused_in_a_row"] == 7
        assert s.scalars(select(CampaignRow)).one().status == CampaignStatus.FAILED
    engine.dispose()
