"""Samples and waiting reasons in the store (controller/store/samples.py), and the scalar
measurements observations carry (controller/store/queries.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.store import (
    add_experiment,
    add_measurements,
    add_step,
    events,
    observations,
    set_experiment_status,
    transaction,
)
from controller.store.samples import (
    active_samples,
    clear_waiting,
    finish_sample,
    list_samples,
    move_sample,
    set_waiting,
)
from models.errors import IllegalTransitionError
from models.objectives import Objective
from models.records import Measurement
from models.status import ExperimentStatus, SampleState
from models.tables import ExperimentRow

ES = ExperimentStatus


def _experiment(s: Session, campaign_id: int, status: ExperimentStatus) -> int:
    e = add_experiment(s, campaign_id, {"x1": 0.5, "x2": 0.5, "solvent": "water"})
    for st in (ES.QUEUED, ES.RUNNING):
        set_experiment_status(s, e, st)
        if st == status:
            break
    return e.id


def test_a_sample_is_made_moved_and_put_back(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    with transaction(factory) as s:
        exp = _experiment(s, campaign_id, ES.RUNNING)
        move_sample(s, campaign_id, exp, to="dosing-1", step=0, action="dose", label="crucible-2",
                    container="crucible")  # fmt: skip
    with transaction(factory) as s:
        move_sample(s, campaign_id, exp, to="furnace-1", step=1, action="heat", label="crucible-2",
                    container="crucible")  # fmt: skip
        assert active_samples(s, campaign_id) == [(exp, "crucible-2", "crucible")]
        (row,) = list_samples(s, campaign_id)
        assert (row.label, row.location, row.state) == ("crucible-2", "furnace-1", "IN_PROCESS")
    with transaction(factory) as s:
        assert finish_sample(s, campaign_id, exp, ES.COMPLETED)
        assert not finish_sample(s, campaign_id, exp, ES.COMPLETED)  # once only
        assert active_samples(s, campaign_id) == []
        (row,) = list_samples(s, campaign_id)
        assert (row.location, row.state) == ("storage", SampleState.MEASURED)
        moves = [ev.data for ev in events(s, campaign_id) if ev.kind == "sample.moved"]
        assert [(m["from"], m["to"]) for m in moves] == [
            ("storage", "dosing-1"),
            ("dosing-1", "furnace-1"),
            ("furnace-1", "storage"),
        ]
        assert [m.get("step") for m in moves] == [0, 1, None]
        assert [m.get("created", False) for m in moves] == [True, False, False]
        # a measured sample is never taken up again
        with pytest.raises(IllegalTransitionError):
            move_sample(s, campaign_id, exp, to="xrd-1", step=2, action="xrd", label="c",
                        container=None)  # fmt: skip


def test_a_discarded_sample_is_taken_up_again_in_another_container(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    with transaction(factory) as s:
        exp = _experiment(s, campaign_id, ES.RUNNING)
        move_sample(s, campaign_id, exp, to="a", step=0, action="dose", label="crucible-1",
                    container="crucible")  # fmt: skip
        finish_sample(s, campaign_id, exp, ES.INTERRUPTED)
        assert list_samples(s, campaign_id)[0].state == SampleState.DISCARDED
        move_sample(s, campaign_id, exp, to="b", step=1, action="heat", label="crucible-3",
                    container="crucible")  # fmt: skip
        (row,) = list_samples(s, campaign_id)
        assert (row.label, row.location, row.state) == ("crucible-3", "b", "IN_PROCESS")
        last = [ev.data for ev in events(s, campaign_id) if ev.kind == "sample.moved"][-1]
        assert (last["relabelled_from"], last["label"]) == ("crucible-1", "crucible-3")


def test_waiting_reasons_are_written_and_cleared(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    with transaction(factory) as s:
        a = _experiment(s, campaign_id, ES.QUEUED)
        b = _experiment(s, campaign_id, ES.QUEUED)
        set_waiting(s, {a: "resource robot-arm held by exp 3", b: "crucible: none free"})
    with transaction(factory) as s:
        set_waiting(s, {a: None})
        got = dict(s.execute(select(ExperimentRow.id, ExperimentRow.waiting_for)).all())
        assert got == {a: None, b: "crucible: none free"}
        clear_waiting(s, campaign_id)
        assert set(s.scalars(select(ExperimentRow.waiting_for))) == {None}


def test_observations_carry_every_scalar_measurement_of_completed_steps(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    with transaction(factory) as s:
        done = _experiment(s, campaign_id, ES.RUNNING)
        failed = _experiment(s, campaign_id, ES.RUNNING)
        for exp, n in ((done, 2), (failed, 1)):
            e = s.get_one(ExperimentRow, exp)
            for i in range(n):
                step = add_step(
                    s, e, index=i, kind="k", action="a", parameters={}, request_id=f"r{exp}-{i}"
                )
                values = [Measurement("wf_SrTiO3", 0.1 * (i + 1)), Measurement("y", 1.0 + i)]
                if i == 0:
                    values.append(Measurement("pattern", array=[[1.0, 2.0]]))
                add_measurements(s, step, values)
        set_experiment_status(s, s.get_one(ExperimentRow, done), ES.COMPLETED)
        set_experiment_status(s, s.get_one(ExperimentRow, failed), ES.FAILED)
    with transaction(factory) as s:
        obs = observations(s, campaign_id, [Objective(name="y", direction="maximize")])
    by_id = {o.experiment_id: o for o in obs}
    assert by_id[done].objectives == {"y": 2.0}
    assert by_id[done].measurements == {"wf_SrTiO3": pytest.approx(0.2), "y": 2.0}
    assert not by_id[failed].feasible
    assert by_id[failed].measurements == {"wf_SrTiO3": pytest.approx(0.1), "y": 1.0}
