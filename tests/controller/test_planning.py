"""Planner hosting (controller/planning.py): a planner actor rebuilt from the store after it
was lost, calls sent again while Ray restarts it, and its placement."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.planning import PlannerHost, RayPlanner, StoreRef, ThreadPlanner, build_planner
from controller.store import observations, transaction
from models.campaign import CampaignSpec
from models.errors import PlannerError, PlannerUnavailableError
from models.records import Observation
from models.status import ExperimentStatus
from models.tables import EventRow
from tests.controller.conftest import make_spec
from tests.controller.test_store import run_experiment

ES = ExperimentStatus


def _history(factory: sessionmaker[Session], campaign_id: int) -> list[Observation]:
    """Three completed experiments, one failed and one still running; what a planner learns."""
    with transaction(factory) as s:
        for i in range(3):
            point = {"x1": 0.1 * i, "x2": 0.5, "solvent": "water"}
            run_experiment(s, campaign_id, point, ES.COMPLETED, {"y": float(i), "cost": 1.0})
        run_experiment(s, campaign_id, {"x1": 0.9, "x2": 0.9, "solvent": "ethanol"}, ES.FAILED)
        run_experiment(s, campaign_id, {"x1": 0.4, "x2": 0.4, "solvent": "water"}, ES.RUNNING)
    with transaction(factory) as s:
        return observations(s, campaign_id, list(make_spec().objectives))


def _started(factory: sessionmaker[Session], campaign_id: int) -> list[dict[str, Any]]:
    with transaction(factory) as s:
        rows = s.scalars(
            select(EventRow)
            .where(EventRow.campaign_id == campaign_id, EventRow.kind == "planner.started")
            .order_by(EventRow.id)
        )
        return [dict(r.data) for r in rows]


def _spec(**placement: Any) -> CampaignSpec:
    data = make_spec().model_dump(mode="json")
    data["planner"]["placement"] = placement
    return CampaignSpec.model_validate(data)


def test_the_host_learns_the_campaign_history_from_the_store_once(
    db_url: str, factory: sessionmaker[Session], campaign_id: int
) -> None:
    history = _history(factory, campaign_id)
    assert len(history) == 4

    host = PlannerHost(make_spec().model_dump(mode="json"), 3, StoreRef(db_url, campaign_id))

    # The controller's own tell of the same history (and a result sent again after a
    # restart) teaches nothing twice; a new result is learned.
    assert host.tell(history) == 4
    assert host.tell(history[:1]) == 4
    new = Observation({"x1": 0.7, "x2": 0.2, "solvent": "water"}, {"y": 5.0, "cost": 1.0}, True, 99)
    assert host.tell([new]) == 5
    # The same experiment with other values (a failed experiment retried and completed) is
    # a new observation.
    assert host.tell([Observation(dict(new.parameters), {}, False, 99)]) == 6
    related = host.tell_related("other", history)  # the task's feasible points
    assert host.tell_related("other", history) == related == 3
    started = _started(factory, campaign_id)
    assert len(started) == 1
    assert started[0]["observations"] == 4
    assert started[0]["related"] == {}


def test_no_store_reference_for_an_in_memory_database() -> None:
    assert StoreRef.for_campaign("sqlite://", 1) is None
    assert StoreRef.for_campaign("sqlite:///:memory:", 1) is None
    assert StoreRef.for_campaign("sqlite:////tmp/x.db", 1) == StoreRef("sqlite:////tmp/x.db", 1)
    url = "postgresql://u@db/sdlab"
    assert StoreRef.for_campaign(url, 2) == StoreRef(url, 2)


async def _kill(planner: RayPlanner) -> None:
    """Kill the actor's process as a dying node would; Ray may restart it."""
    os.kill((await planner.where())["pid"], signal.SIGKILL)


@pytest.mark.slow
def test_a_lost_planner_actor_comes_back_with_its_history(
    ray_address: str, db_url: str, factory: sessionmaker[Session], campaign_id: int
) -> None:
    history = _history(factory, campaign_id)
    spec = _spec(num_cpus=0.5, max_restarts=2, restart_timeout_s=60)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        planner = RayPlanner(spec, 3, StoreRef(db_url, campaign_id))
        try:
            await planner.tell(history)  # the controller's start-up tell: nothing new
            before = await planner.where()
            first = await planner.ask(2, [])
            assert len(first.proposals) == 2
            assert first.n_train == 4
            await _kill(planner)
            # A tell the dying actor may never take, then an ask: both reach the new actor.
            await planner.tell(history[-1:])
            decision = await planner.ask(2, [])
            assert len(decision.proposals) == 2
            after = await planner.where()
            return before, after, decision.n_train
        finally:
            planner.close()

    before, after, n_train = asyncio.run(scenario())

    assert before["restarted"] is False
    assert after["restarted"] is True
    assert before["resources"] == after["resources"] == {"CPU": 0.5}
    assert n_train == 4  # rebuilt from the store, the resent tell not learned twice
    started = _started(factory, campaign_id)
    assert [e["restarted"] for e in started] == [False, True]
    assert [e["observations"] for e in started] == [4, 4]


@pytest.mark.slow
def test_a_planner_actor_without_restarts_fails_its_next_call(
    ray_address: str, db_url: str, factory: sessionmaker[Session], campaign_id: int
) -> None:
    spec = _spec(num_cpus=0.5, max_restarts=0)

    async def scenario() -> None:
        planner = RayPlanner(spec, 3, StoreRef(db_url, campaign_id))
        try:
            await planner.ask(1, [])
            await _kill(planner)
            with pytest.raises(PlannerUnavailableError) as info:
                await planner.ask(1, [])
            assert info.value.call == "ask"
            assert info.value.attempts == 1
        finally:
            planner.close()

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_planner_actor_that_cannot_read_the_store_fails_at_once(
    ray_address: str, tmp_path: Path
) -> None:
    missing = f"sqlite:///{tmp_path / 'nowhere' / 'sdlab.db'}"  # its directory does not exist

    async def scenario() -> None:
        planner = RayPlanner(_spec(num_cpus=0.5, max_restarts=3), 3, StoreRef(missing, 1))
        try:
            with pytest.raises(PlannerUnavailableError) as info:
                await planner.ask(1, [])
            assert info.value.attempts == 1
            assert "sdlab.db" in info.value.reason or "unable to open" in info.value.reason
        finally:
            planner.close()

    asyncio.run(scenario())


def test_the_ray_planner_raises_the_tell_errors_of_the_thread_planner(
    ray_address: str, db_url: str, campaign_id: int
) -> None:
    spec = _spec(num_cpus=0.5)
    # a feasible result at a point outside the search space: the planner refuses it
    bad = [Observation({"x1": 5.0, "x2": 0.5, "solvent": "water"}, {"y": 1.0}, True, None)]

    async def scenario() -> list[tuple[type[BaseException], str]]:
        errors = []
        thread = ThreadPlanner(build_planner(spec, 3))
        ray_planner = RayPlanner(spec, 3, StoreRef(db_url, campaign_id))
        for planner in (thread, ray_planner):
            try:
                with pytest.raises(PlannerError, match="does not fit the search space") as info:
                    await planner.tell(bad)
                errors.append((type(info.value), str(info.value)))
                assert len((await planner.ask(1, [])).proposals) == 1  # it still answers
            finally:
                planner.close()
        return errors

    from_thread, from_ray = asyncio.run(scenario())
    assert from_thread == from_ray
