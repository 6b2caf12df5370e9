"""The loop's Core writes (controller/store/hot.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.store import transaction
from controller.store.hot import finish_step, insert_decision, move_experiment, start_step
from controller.store.queries import known_observations
from models.errors import IllegalTransitionError, StoreError
from models.records import Decision, Measurement, Proposal
from models.status import ExperimentStatus, StepStatus
from models.tables import DecisionRow, ExperimentRow, MeasurementRow, StepRow
from tests.controller.conftest import make_spec

ES = ExperimentStatus


def decision(n: int) -> Decision:
    return Decision(
        proposals=[
            Proposal({"x1": i / 10, "x2": 0.5, "solvent": "water"}, score=float(i), origin="t")
            for i in range(n)
        ],
        planner="random",
        version="1",
        seed=3,
        n_train=7,
        n_pending=2,
        candidate_scores=[0.1, 0.2, 0.3],
        seconds=0.01,
        details={"phase": "test"},
    )


def test_a_decision_and_its_experiments_are_written_in_proposal_order(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    d = decision(4)
    props = list(d.proposals)
    with transaction(factory) as s:
        decision_id, ids = insert_decision(
            s,
            campaign_id,
            d,
            [(0, props[0], dict(props[0].parameters)), (2, props[2], dict(props[2].parameters))],
            [(1, props[1], "safety gate: too hot"), (3, props[3], "safety gate: too cold")],
        )
    assert sorted(ids) == [0, 1, 2, 3]
    with transaction(factory) as s:
        drow = s.get_one(DecisionRow, decision_id)
        assert (drow.n_train, drow.n_pending, drow.n_proposed) == (7, 2, 4)
        assert drow.details == {"phase": "test"}
        for k, exp_id in ids.items():
            e = s.get_one(ExperimentRow, exp_id)
            assert e.decision_id == decision_id
            assert e.proposal_index == k
            assert e.parameters["x1"] == pytest.approx(k / 10)
            assert e.score == float(k)
            if k in (0, 2):
                assert e.status is ES.QUEUED
                assert e.finished_at is None
            else:
                assert e.status is ES.ABANDONED
                assert e.reason is not None
                assert e.reason.startswith("safety gate")
                assert e.finished_at is not None


def test_step_lifecycle_with_measurements_and_compare_and_set(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    d = decision(1)
    with transaction(factory) as s:
        _, ids = insert_decision(s, campaign_id, d, [(0, d.proposals[0], {"x1": 0.0})], [])
    exp_id = ids[0]
    with transaction(factory) as s:
        step_id = start_step(
            s,
            exp_id,
            index=0,
            kind="station",
            action="measure",
            parameters={"x1": 0.0},
            request_id="r-1",
            instrument="station-1",
        )
        assert move_experiment(s, exp_id, ES.QUEUED, ES.RUNNING) is ES.RUNNING
    with transaction(factory) as s:
        finish_step(
            s,
            step_id,
            exp_id,
            StepStatus.COMPLETED,
            measurements=[Measurement("y", 1.5, 0.1, "eV"), Measurement("xrd", array=[[1, 2]])],
        )
        move_experiment(s, exp_id, ES.RUNNING, ES.COMPLETED)
    with transaction(factory) as s:
        step = s.get_one(StepRow, step_id)
        assert step.status is StepStatus.COMPLETED
        assert step.sent_at is not None
        assert step.finished_at is not None
        e = s.get_one(ExperimentRow, exp_id)
        assert e.status is ES.COMPLETED
        assert e.started_at is not None
        assert e.finished_at is not None
        got = {m.name: m for m in s.scalars(select(MeasurementRow))}
        assert got["y"].value == 1.5
        assert got["xrd"].shape == [1, 2]

    # A writer that believes another status is refused and changes nothing.
    with pytest.raises(StoreError, match="no longer RUNNING"), transaction(factory) as s:
        move_experiment(s, exp_id, ES.RUNNING, ES.FAILED)
    with pytest.raises(StoreError), transaction(factory) as s:
        finish_step(s, step_id, exp_id, StepStatus.FAILED)
    with pytest.raises(IllegalTransitionError), transaction(factory) as s:
        move_experiment(s, exp_id, ES.COMPLETED, ES.RUNNING)
    with transaction(factory) as s:
        assert s.get_one(ExperimentRow, exp_id).status is ES.COMPLETED
        assert s.get_one(StepRow, step_id).status is StepStatus.COMPLETED


def test_the_planner_knows_what_ended_in_the_order_it_ended(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    """COMPLETED, FAILED and ABANDONED-as-infeasible experiments are known, in the order
    of the writes that ended them; other abandoned ones are not; reads resume after a cursor."""
    objectives = list(make_spec().objectives)
    d = decision(3)
    props = list(d.proposals)
    with transaction(factory) as s:
        _, ids = insert_decision(
            s,
            campaign_id,
            d,
            [(0, props[0], dict(props[0].parameters))],
            [(1, props[1], "safety gate: too hot"), (2, props[2], "cost budget: spent")],
            infeasible={1},
        )
    with transaction(factory) as s:
        first, last = known_observations(s, campaign_id, objectives)
        assert [(o.experiment_id, o.feasible) for o in first] == [(ids[1], False)]
        move_experiment(s, ids[0], ExperimentStatus.QUEUED, ExperimentStatus.RUNNING)
        move_experiment(s, ids[0], ExperimentStatus.RUNNING, ExperimentStatus.FAILED)
        later, _ = known_observations(s, campaign_id, objectives, after=last)
        assert [o.experiment_id for o in later] == [ids[0]]
    with transaction(factory) as s:
        _, again = insert_decision(s, campaign_id, decision(1), [(0, props[0], {"x1": 0.5})], [])
        move_experiment(s, again[0], ExperimentStatus.QUEUED, ExperimentStatus.ABANDONED)
    with transaction(factory) as s:
        known, _ = known_observations(s, campaign_id, objectives)
        # the cost-budget refusal and the plainly abandoned one are not known
        assert [o.experiment_id for o in known] == [ids[1], ids[0]]
        assert known_observations(s, campaign_id, objectives, after=last + 1) == ([], last + 1)
