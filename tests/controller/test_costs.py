"""Experiment costs and ``budget.max_cost``: what each experiment costs (declared by the
instrument or overridden by the workflow step), the ledger, and a campaign run against a
simulated multi-fidelity station that stops at its cost budget, with the spent cost rebuilt
from the store by a restarted controller."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy import select

from controller.costs import CostLedger, experiment_cost, step_cost
from controller.loop import CampaignController, ControllerOptions
from controller.report import export_text, status_table
from controller.runner import RunOptions, _prepare
from controller.store import create_campaign, make_engine, migrate, session_factory, transaction
from controller.store.queries import COST_KEY, cost_spent, export_rows
from instruments.driver import ActionSpec, InstrumentDescription, OutputSpec, ParameterLimit
from instruments.server import InstrumentServer
from models.campaign import CampaignSpec, WorkflowStep
from models.errors import InvalidCampaignError
from models.instrument_spec import SimulatedInstrumentSpec
from models.status import ExperimentStatus
from models.tables import DecisionRow, EventRow, ExperimentRow
from sim.drivers import make_driver

MEASURE = ActionSpec(
    name="measure",
    parameters=[ParameterLimit(name="x"), ParameterLimit(name="fidelity")],
    outputs=[OutputSpec(name="y")],
    cost=1.0,
    cost_per={"fidelity": 9.0},
)


def spec(max_cost: float | None, step: dict[str, Any] | None = None) -> CampaignSpec:
    return CampaignSpec.model_validate(
        {
            "campaign": {"name": "mf", "seed": 5},
            "parameters": [
                {"name": "x1", "type": "continuous", "lower": -5, "upper": 10},
                {"name": "x2", "type": "continuous", "lower": 0, "upper": 15},
                {"name": "fidelity", "type": "continuous", "lower": 0, "upper": 1},
            ],
            "objectives": [{"name": "y", "direction": "maximize"}],
            "workflow": [{"kind": "station", "action": "measure", **(step or {})}],
            "instruments": [
                {"name": "station-1", "kind": "station", "address": "tcp://127.0.0.1:1"}
            ],
            "planner": {"name": "sobol"},
            "budget": {"max_experiments": 100, "max_cost": max_cost},
        }
    )


def describe(action: ActionSpec) -> dict[str, InstrumentDescription | None]:
    return {
        "station-1": InstrumentDescription(
            name="station-1", driver="d", driver_version="1", actions=[action]
        )
    }


def test_the_declared_cost_is_affine_in_the_parameters_it_names() -> None:
    point = {"x1": 0.0, "x2": 1.0, "fidelity": 0.5}
    assert experiment_cost(spec(None), describe(MEASURE), point) == pytest.approx(5.5)
    # an instrument that declares nothing makes the experiment free
    free = MEASURE.model_copy(update={"cost": 0.0, "cost_per": {}})
    assert experiment_cost(spec(None), describe(free), point) == 0.0
    # not described yet: nothing is known about the cost
    assert experiment_cost(spec(None), {"station-1": None}, point) == 0.0


def test_a_workflow_step_overrides_the_declared_cost() -> None:
    point = {"x1": 0.0, "x2": 1.0, "fidelity": 0.5}
    fixed_only = spec(None, {"cost": 2.0})
    assert experiment_cost(fixed_only, describe(MEASURE), point) == pytest.approx(2.0)
    per_only = spec(None, {"cost_per": {"fidelity": 4.0}})
    assert experiment_cost(per_only, describe(MEASURE), point) == pytest.approx(1.0 + 2.0)
    both = spec(None, {"cost": 3.0, "cost_per": {"x2": 0.5}})
    assert experiment_cost(both, describe(MEASURE), point) == pytest.approx(3.5)
    step = WorkflowStep(kind="station", action="measure", cost_per={"fidelity": 1.0})
    with pytest.raises(InvalidCampaignError, match="cost_per"):
        step_cost(step, None, {"x1": 0.0})


def test_the_ledger_counts_completed_and_running_experiments_only() -> None:
    ledger = CostLedger(10.0, completed=4.0, pending={7: 3.0, 8: 2.0})
    assert ledger.spent([7, 8]) == pytest.approx(9.0)
    assert ledger.allows(10.0)
    assert not ledger.allows(10.5)
    ledger.finish(7, completed=False)  # failed: its cost is not spent
    ledger.finish(8, completed=True)
    assert ledger.spent([]) == pytest.approx(6.0)
    assert CostLedger(None).allows(1e30)


def _run(db: str, campaign: CampaignSpec) -> dict[str, Any]:
    station = SimulatedInstrumentSpec(
        world="augmented-branin", cost=1.0, cost_per={"fidelity": 9.0}
    )

    async def go() -> dict[str, Any]:
        srv = InstrumentServer(make_driver("station-1", station), "tcp://127.0.0.1:*")
        endpoint = await srv.start()
        try:
            ctl = CampaignController(
                db, "mf", {"station-1": endpoint}, ControllerOptions(use_ray_planner=False)
            )
            try:
                return await ctl.run()
            finally:
                ctl.dispose()
        finally:
            await srv.stop()

    return asyncio.run(go())


def test_campaign_stops_before_passing_max_cost_and_a_restart_recomputes_the_cost(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'cost.db'}"
    campaign = spec(30.0)
    engine = make_engine(db)
    migrate(engine)
    factory = session_factory(engine)
    with transaction(factory) as s:
        create_campaign(s, campaign, seed=5, max_experiments=100)

    result = _run(db, campaign)

    assert result["status"] == "COMPLETED"
    assert result["stop_reason"] == "cost budget reached"
    with transaction(factory) as s:
        exps = s.scalars(select(ExperimentRow).order_by(ExperimentRow.id)).all()
        done = [e for e in exps if e.status == ExperimentStatus.COMPLETED]
        over = [e for e in exps if e.status == ExperimentStatus.ABANDONED]
        truth = [1.0 + 9.0 * e.parameters["fidelity"] for e in done]
        rows = {r["id"]: r for r in export_rows(s, "mf")}
        # each experiment's cost is recorded with its decision and exported
        for e, c in zip(done, truth, strict=True):
            assert rows[e.id]["cost"] == pytest.approx(c)
        spent = cost_spent(s, done[0].campaign_id)
        assert spent == pytest.approx(sum(truth))
        assert result["cost_spent"] == pytest.approx(spent)
        assert spent <= 30.0
        # the first proposal that would have passed the budget was abandoned, not run
        assert len(over) == 1
        assert "cost budget" in (over[0].reason or "")
        assert spent + 1.0 + 9.0 * over[0].parameters["fidelity"] > 30.0
        assert s.scalars(select(EventRow).where(EventRow.kind == "campaign.cost_budget")).one()
        decisions = s.scalars(select(DecisionRow)).all()
        assert all(len(d.details[COST_KEY]) == d.n_proposed for d in decisions)
        assert "cost spent" in [str(c.header) for c in status_table(s).columns]
        assert "cost" in export_text(s, "mf", "csv").splitlines()[0].split(",")

    # A restarted controller rebuilds the spent cost from the store alone.
    restarted = CampaignController(
        db, "mf", {"station-1": "tcp://127.0.0.1:1"}, ControllerOptions(use_ray_planner=False)
    )
    try:
        assert restarted.book.ledger.completed == pytest.approx(spent)
        assert restarted.progress()["cost_spent"] == pytest.approx(spent)
        assert not restarted.book.ledger.allows(spent + 1.0 + 9.0 * over[0].parameters["fidelity"])
    finally:
        restarted.dispose()
    # Running the file again finds the campaign finished: no controller starts, so no
    # further proposal is made and abandoned; raising max_cost continues it.
    console = Console(record=True, width=200)
    assert _prepare(campaign, tmp_path / "mf.toml", RunOptions(db_url=db), console) is None
    assert "reached its cost budget" in console.export_text()
    assert _prepare(spec(40.0), tmp_path / "mf.toml", RunOptions(db_url=db), console) == "mf"
    with transaction(factory) as s:
        assert len(s.scalars(select(ExperimentRow)).all()) == len(exps)
    engine.dispose()


def test_without_max_cost_costs_are_still_recorded(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'free.db'}"
    campaign = spec(None).model_copy(
        update={"budget": spec(None).budget.model_copy(update={"max_experiments": 4})}
    )
    engine = make_engine(db)
    migrate(engine)
    factory = session_factory(engine)
    with transaction(factory) as s:
        create_campaign(s, campaign, seed=5, max_experiments=4)
    result = _run(db, campaign)
    assert result["status"] == "COMPLETED"
    assert result["completed"] == 4
    with transaction(factory) as s:
        exps = s.scalars(select(ExperimentRow)).all()
        expected = sum(1.0 + 9.0 * e.parameters["fidelity"] for e in exps)
        assert cost_spent(s, exps[0].campaign_id) == pytest.approx(expected)
        assert expected > 4.0  # Sobol fidelities are not all zero
    engine.dispose()
