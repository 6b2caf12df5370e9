"""People as instruments: a campaign with a manual step, its results entered through the
dashboard's API by the test (a real controller, a real instrument server hosting the
``manual`` driver, one SQLite store shared by all three)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from controller.api.app import create_app
from controller.loop import CampaignController, ControllerOptions
from controller.manual import ManualDriver, ManualOptions
from controller.store import create_campaign, transaction
from instruments.server import InstrumentServer
from models.campaign import CampaignSpec
from models.status import CampaignStatus, ExperimentStatus, StepStatus, TaskStatus
from models.tables import CampaignRow, EventRow, ExperimentRow, StepRow, TaskRow
from tests.controller.api_store import bearer, dash_settings, make_users


def truth(x: float) -> float:
    """What the person reads off the scale at ``x``."""
    return round(10.0 - (x - 4.0) ** 2, 6)


def campaign(budget: int) -> CampaignSpec:
    return CampaignSpec.model_validate(
        {
            "campaign": {"name": "by-hand", "seed": 5},
            "parameters": [{"name": "x", "type": "continuous", "lower": 0, "upper": 8}],
            "objectives": [{"name": "y", "direction": "maximize"}],
            "workflow": [{"kind": "person", "action": "read_scale"}],
            "instruments": [{"name": "alice", "kind": "person", "address": "tcp://127.0.0.1:1"}],
            "planner": {"name": "sobol"},
            "budget": {"max_experiments": budget, "max_failures": 1},
        }
    )


def manual_options(db: str) -> ManualOptions:
    return ManualOptions.model_validate(
        {
            "db": db,
            "poll_s": 0.05,
            "actions": [
                {
                    "name": "read_scale",
                    "instructions": "Set the dial to {x} and read the scale.",
                    "timeout_s": 60,
                    "parameters": [{"name": "x", "minimum": 0, "maximum": 8}],
                    "outputs": [{"name": "y", "minimum": -100, "maximum": 100, "unit": "g"}],
                }
            ],
        }
    )


Person = Callable[[TestClient, dict[str, str]], Awaitable[None]]


def run(tmp_path: Path, budget: int, person: Person) -> tuple[Any, dict[str, Any]]:
    settings = dash_settings(tmp_path)
    app = create_app(settings)
    factory = app.state.factory
    tokens = make_users(factory, settings.kdf_iterations)
    with transaction(factory) as s:
        create_campaign(s, campaign(budget), seed=5, max_experiments=budget)

    async def go() -> dict[str, Any]:
        server = InstrumentServer(
            ManualDriver("alice", manual_options(settings.db_url)), "tcp://127.0.0.1:*"
        )
        endpoints = {"alice": await server.start()}
        ctl = CampaignController(
            settings.db_url, "by-hand", endpoints, ControllerOptions(use_ray_planner=False)
        )
        try:
            with TestClient(app) as client:
                # each token's first use records it (a write); done before the controller
                # writes too (SQLite refuses a read-then-write transaction that raced one)
                for token in tokens.values():
                    assert client.get("/api/tasks", headers=bearer(token)).status_code == 200
                task = asyncio.create_task(ctl.run())
                doing = asyncio.create_task(person(client, tokens))
                done, _ = await asyncio.wait({task, doing}, return_when=asyncio.FIRST_EXCEPTION)
                for t in done:
                    t.result()  # a failed assertion in the person fails the test
                await doing
            return await task
        finally:
            ctl.dispose()
            await server.stop()

    return factory, asyncio.run(go())


async def next_task(client: TestClient, token: str, seen: set[int]) -> dict[str, Any]:
    while True:
        res = await asyncio.to_thread(client.get, "/api/tasks", headers=bearer(token))
        assert res.status_code == 200, res.text
        fresh = [t for t in res.json() if t["id"] not in seen]
        if fresh:
            seen.add(fresh[0]["id"])
            return fresh[0]
        await asyncio.sleep(0.05)


async def post(client: TestClient, path: str, token: str, body: Any = None) -> Any:
    return await asyncio.to_thread(client.post, path, headers=bearer(token), json=body)


def test_a_campaign_with_a_manual_step_completes_with_results_entered_through_the_api(
    tmp_path: Path,
) -> None:
    entered: dict[str, float] = {}
    refusals: list[Any] = []

    async def person(client: TestClient, tokens: dict[str, str]) -> None:
        seen: set[int] = set()
        op = tokens["operator"]
        for _ in range(2):
            t = await next_task(client, tokens["viewer"], seen)
            x = t["parameters"]["x"]
            assert t["instructions"] == f"Set the dial to {x} and read the scale."
            assert t["outputs"][0]["name"] == "y"
            assert (
                await post(client, f"/api/tasks/{t['id']}/claim", tokens["viewer"])
            ).status_code == 403
            assert (await post(client, f"/api/tasks/{t['id']}/claim", op)).status_code == 200
            for bad in ({"y": 1000}, {"y": "heavy"}, {}, {"y": 1, "z": 2}):
                res = await post(client, f"/api/tasks/{t['id']}/done", op, {"values": bad})
                refusals.append(res.json()["detail"])
                assert res.status_code == 422
            res = await post(client, f"/api/tasks/{t['id']}/done", op, {"values": {"y": truth(x)}})
            assert res.status_code == 200, res.text
            assert res.json()["status"] == "DONE"
            entered[t["request_id"]] = truth(x)
            again = await post(client, f"/api/tasks/{t['id']}/done", op, {"values": {"y": 0}})
            assert again.status_code == 409  # finished: what was entered stays

    factory, result = run(tmp_path, 2, person)

    assert result["status"] == "COMPLETED"
    assert result["completed"] == 2
    assert [r["field"] for r in refusals[:4]] == ["values.y", "values.y", "values.y", "values.z"]
    assert "above the maximum 100" in refusals[0]["message"]
    with transaction(factory) as s:
        assert s.scalars(select(CampaignRow)).one().status == CampaignStatus.COMPLETED
        for e in s.scalars(select(ExperimentRow)):
            assert e.status == ExperimentStatus.COMPLETED
            [step] = e.steps
            assert step.status == StepStatus.COMPLETED
            [m] = e.measurements
            assert (m.name, m.value, m.unit) == ("y", entered[step.request_id], "g")
            assert m.value == truth(float(e.parameters["x"]))
        tasks = s.scalars(select(TaskRow)).all()
        assert [(t.status, t.claimed_by, t.finished_by) for t in tasks] == [
            (TaskStatus.DONE, "user:operator", "user:operator")
        ] * 2
        # the audit record: who entered what, when
        done = s.scalars(select(EventRow).where(EventRow.kind == "task.done")).all()
        assert [(ev.actor, ev.data["values"]) for ev in done] == [
            ("user:operator", {"y": entered[t.request_id]}) for t in tasks
        ]


def test_a_failed_task_fails_its_step(tmp_path: Path) -> None:
    async def person(client: TestClient, tokens: dict[str, str]) -> None:
        t = await next_task(client, tokens["viewer"], set())
        op = tokens["operator"]
        res = await post(client, f"/api/tasks/{t['id']}/fail", op, {"reason": "scale broken"})
        assert res.status_code == 200, res.text

    factory, result = run(tmp_path, 1, person)

    assert result["status"] == "FAILED"
    with transaction(factory) as s:
        [step] = s.scalars(select(StepRow)).all()
        assert step.status == StepStatus.FAILED
        assert "task_failed" in (step.error or "")
        assert "scale broken" in (step.error or "")
        [e] = s.scalars(select(ExperimentRow)).all()
        assert e.status == ExperimentStatus.FAILED
        [task] = s.scalars(select(TaskRow)).all()
        assert (task.status, task.reason, task.finished_by) == (
            TaskStatus.FAILED,
            "scale broken",
            "user:operator",
        )


def test_a_gateway_file_hosts_a_manual_instrument_through_its_entry_point(tmp_path: Path) -> None:
    """``sdlab instruments serve`` (and ``sdlab run``) find ``manual`` like any driver, and
    its options are checked by its own model: a bad one is named by its key path."""
    from instruments.gateway import build_drivers
    from models.errors import InvalidCampaignError
    from models.gateway import load_gateway

    db = f"sqlite:///{tmp_path / 'lab.db'}"
    lab = tmp_path / "lab.toml"
    lab.write_text(
        "[[instruments]]\n"
        'name = "alice"\nkind = "person"\ndriver = "manual"\n'
        "[instruments.options]\n"
        f'db = "{db}"\n'
        "[[instruments.options.actions]]\n"
        'name = "read_scale"\ninstructions = "Read the scale."\n'
        '[[instruments.options.actions.outputs]]\nname = "y"\n'
    )
    [driver] = build_drivers(load_gateway(lab))
    assert isinstance(driver, ManualDriver)
    assert [a.name for a in driver.actions()] == ["read_scale"]
    lab.write_text(lab.read_text().replace(f'db = "{db}"\n', ""))
    with pytest.raises(InvalidCampaignError) as info:
        build_drivers(load_gateway(lab))
    assert [p.key for p in info.value.problems] == ["instruments[0].options.db"]
