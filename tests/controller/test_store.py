"""Tests of the experiment store (controller/store), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, event, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from controller.store import (
    add_decision,
    add_event,
    add_experiment,
    add_measurements,
    add_step,
    count_by_status,
    create_campaign,
    current_revisions,
    events,
    experiments_in_status,
    export_rows,
    get_campaign,
    head_revision,
    list_campaigns,
    make_engine,
    migrate,
    observations,
    pending_parameters,
    session_factory,
    set_campaign_status,
    set_experiment_status,
    set_step_status,
    steps_in_status,
    transaction,
)
from models.campaign import CampaignSpec
from models.errors import IllegalTransitionError, StoreError
from models.records import Decision, Measurement, Proposal
from models.status import CampaignStatus, ExperimentStatus, StepStatus
from models.tables import (
    Base,
    CampaignRow,
    DecisionRow,
    EventRow,
    ExperimentRow,
    MeasurementRow,
    StepRow,
)
from tests.controller.conftest import make_spec

ES = ExperimentStatus
T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def run_experiment(
    s: Session,
    campaign_id: int,
    params: dict[str, Any],
    final: ExperimentStatus,
    values: dict[str, float] | None = None,
    *,
    decision_id: int | None = None,
) -> ExperimentRow:
    """Add an experiment and drive it to ``final`` through legal moves, one step measuring."""
    e = add_experiment(s, campaign_id, params, decision_id=decision_id, origin="test")
    path = {
        ES.PROPOSED: [],
        ES.QUEUED: [ES.QUEUED],
        ES.ABANDONED: [ES.ABANDONED],
        ES.RUNNING: [ES.QUEUED, ES.RUNNING],
        ES.INTERRUPTED: [ES.QUEUED, ES.RUNNING, ES.INTERRUPTED],
        ES.FAILED: [ES.QUEUED, ES.RUNNING, ES.FAILED],
        ES.COMPLETED: [ES.QUEUED, ES.RUNNING, ES.COMPLETED],
    }[final]
    for st in path:
        if st is ES.RUNNING:
            set_experiment_status(s, e, st)
            step = add_step(
                s, e, index=0, kind="station", action="measure", parameters=params,
                request_id=f"e{e.id}-0-1",
            )  # fmt: skip
            set_step_status(s, step, StepStatus.RUNNING, instrument="station-1")
            if values is not None:
                set_step_status(s, step, StepStatus.COMPLETED)
                add_measurements(s, step, [Measurement(n, v) for n, v in values.items()])
            continue
        set_experiment_status(s, e, st)
    return e


def insert_and_flush(factory: sessionmaker[Session], row: Base) -> None:
    with transaction(factory) as s:
        s.add(row)
        s.flush()


# ----------------------------------------------------------------------------- engine


def test_migrate_twice_is_a_noop(engine: Engine, factory: sessionmaker[Session]) -> None:
    with transaction(factory) as s:
        create_campaign(s, make_spec(), seed=1, max_experiments=5)
    migrate(engine)
    migrate(engine)
    with engine.connect() as conn:
        assert current_revisions(conn) == (head_revision(),)
        assert set(inspect(conn).get_table_names()) == {*Base.metadata.tables, "alembic_version"}
    with transaction(factory) as s:
        assert [c.name for c in list_campaigns(s)] == ["demo"]


def test_metadata_matches_migrations(engine: Engine) -> None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, Base.metadata) == []


def test_newer_unknown_revision_gives_store_error(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed_future'"))
    with pytest.raises(StoreError, match="f00dfeed_future"):
        migrate(engine)


def test_unreachable_database_gives_store_error_without_password(tmp_path: Any) -> None:
    eng = make_engine("postgresql://sdlab:s3cret@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(StoreError) as info:
        migrate(eng)
    assert "127.0.0.1:1" in str(info.value)
    assert "s3cret" not in str(info.value)
    eng = make_engine(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")
    with pytest.raises(StoreError, match=r"x\.db"):
        migrate(eng)


def test_postgresql_urls_use_psycopg() -> None:
    for url in ("postgresql://u:p@h/db", "postgres://u:p@h/db", "postgresql+psycopg://u@h/db"):
        assert make_engine(url).url.drivername == "postgresql+psycopg"


def test_in_memory_sqlite_is_shared_by_sessions(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the migrations are found from any working directory
    eng = make_engine("sqlite://")
    migrate(eng)
    f = session_factory(eng)
    with transaction(f) as s:
        create_campaign(s, make_spec(), seed=0, max_experiments=1)
    with transaction(f) as s:
        assert get_campaign(s, "demo") is not None


def test_sqlite_pragmas(tmp_path: Any) -> None:
    eng = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    with eng.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_transaction_rolls_back_on_error(factory: sessionmaker[Session]) -> None:
    def create_then_fail() -> None:
        with transaction(factory) as s:
            create_campaign(s, make_spec(), seed=0, max_experiments=1)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        create_then_fail()
    with transaction(factory) as s:
        assert get_campaign(s, "demo") is None


# ----------------------------------------------------------------------------- campaigns


def test_campaign_create_get_and_unique_name(factory: sessionmaker[Session]) -> None:
    spec = make_spec()
    with transaction(factory) as s:
        row = create_campaign(s, spec, seed=7, max_experiments=12)
    with transaction(factory) as s:
        got = get_campaign(s, "demo")
        assert got is not None
        assert got.id == row.id
        assert len(got.uid) == 32
        int(got.uid, 16)
        assert got.status is CampaignStatus.CREATED
        assert got.spec == spec.model_dump(mode="json")
        assert CampaignSpec.model_validate(got.spec) == spec
        assert got.spec_hash == spec.spec_hash()
        assert (got.seed, got.max_experiments) == (7, 12)
        assert get_campaign(s, "other") is None
        assert [e.kind for e in events(s, got.id)] == ["campaign.created"]
    with pytest.raises(StoreError, match="demo"), transaction(factory) as s:
        create_campaign(s, spec, seed=7, max_experiments=12)
    # The database enforces it too (e.g. against a concurrent controller).
    raw = CampaignRow(
        uid="0" * 32, name="demo", status=CampaignStatus.CREATED, spec={}, spec_hash="",
        max_experiments=1, seed=0,
    )  # fmt: skip
    with pytest.raises(IntegrityError):
        insert_and_flush(factory, raw)
    with transaction(factory) as s:
        create_campaign(s, make_spec("second"), seed=0, max_experiments=1)
        assert [c.name for c in list_campaigns(s)] == ["demo", "second"]


def test_campaign_status_changes_and_events(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    with transaction(factory) as s:
        c = get_campaign(s, "demo")
        assert c is not None
        set_campaign_status(s, c, CampaignStatus.RUNNING)
        set_campaign_status(s, c, CampaignStatus.PAUSED, actor="operator:ann", reason="lunch")
    with transaction(factory) as s:
        c = get_campaign(s, "demo")
        assert c is not None
        assert c.status is CampaignStatus.PAUSED
        evs = events(s, campaign_id)
        assert [e.kind for e in evs] == ["campaign.created", "campaign.running", "campaign.paused"]
        assert evs[-1].actor == "operator:ann"
        assert evs[-1].data == {"from": "RUNNING", "to": "PAUSED", "reason": "lunch"}
        assert "lunch" in evs[-1].message


def test_illegal_transitions_raise_and_change_nothing(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    with transaction(factory) as s:
        e = add_experiment(s, campaign_id, {"x1": 0.1, "x2": 0.2, "solvent": "water"})
        step = add_step(
            s, e, index=0, kind="station", action="measure", parameters={}, request_id="r-1"
        )
    with transaction(factory) as s:
        c = get_campaign(s, "demo")
        e = s.get_one(ExperimentRow, e.id)
        step = s.get_one(StepRow, step.id)
        assert c is not None
        n_events = len(events(s, None))
        with pytest.raises(IllegalTransitionError) as info:
            set_campaign_status(s, c, CampaignStatus.COMPLETED)
        assert (info.value.current, info.value.target) == ("CREATED", "COMPLETED")
        with pytest.raises(IllegalTransitionError):
            set_experiment_status(s, e, ES.RUNNING)
        with pytest.raises(IllegalTransitionError):
            set_step_status(s, step, StepStatus.COMPLETED)
        assert c.status is CampaignStatus.CREATED
        assert e.status is ES.PROPOSED
        assert e.started_at is None
        assert step.status is StepStatus.QUEUED
        assert step.sent_at is None
    with transaction(factory) as s:
        assert s.get_one(ExperimentRow, e.id).status is ES.PROPOSED
        assert s.get_one(StepRow, step.id).status is StepStatus.QUEUED
        assert len(events(s, None)) == n_events


# ----------------------------------------------------------------------------- experiments


def test_experiment_lifecycle_timestamps_and_events(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    t = [T0 + timedelta(minutes=i) for i in range(5)]
    with transaction(factory) as s:
        e = add_experiment(s, campaign_id, {"x1": 0.5, "x2": 0.5, "solvent": "water"})
        set_experiment_status(s, e, ES.QUEUED, now=t[0])
        set_experiment_status(s, e, ES.RUNNING, now=t[1])
        set_experiment_status(s, e, ES.FAILED, reason="station-1 timed out", now=t[2])
        assert e.finished_at == t[2]
        set_experiment_status(s, e, ES.QUEUED, now=t[3])
        assert e.finished_at is None
        set_experiment_status(s, e, ES.RUNNING, now=t[3])
        # An aware time in another zone is stored as the same instant in UTC.
        set_experiment_status(
            s, e, ES.COMPLETED, now=t[4].astimezone(timezone(timedelta(hours=-5)))
        )
    with transaction(factory) as s:
        e = s.get_one(ExperimentRow, e.id)
        assert e.status is ES.COMPLETED
        assert e.started_at == t[1]  # first time it ran
        assert e.finished_at == t[4]
        assert e.reason == "station-1 timed out"
        for ts in (e.created_at, e.started_at, e.finished_at):
            assert ts is not None
            assert ts.tzinfo is not None
            assert ts.utcoffset() == timedelta(0)
        kinds = [ev.kind for ev in events(s, campaign_id) if ev.experiment_id == e.id]
        # the routine moves are told by the timestamps; the exceptional ones are events
        assert kinds == ["experiment.failed", "experiment.queued"]


def test_timestamps_come_back_timezone_aware_utc(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    with transaction(factory) as s:
        e = run_experiment(s, campaign_id, {"x1": 0.1}, ES.COMPLETED, {"y": 1.0, "cost": 2.0})
        step = s.scalars(select(StepRow).where(StepRow.experiment_id == e.id)).one()
    with transaction(factory) as s:
        c = get_campaign(s, "demo")
        step = s.get_one(StepRow, step.id)
        m = s.scalars(select(MeasurementRow)).first()
        ev = events(s, campaign_id)[0]
        assert c is not None
        assert m is not None
        for ts in (
            c.created_at, c.updated_at, step.queued_at, step.sent_at, step.finished_at,
            m.created_at, ev.created_at,
        ):  # fmt: skip
            assert ts is not None
            assert ts.utcoffset() == timedelta(0)
            assert abs(datetime.now(UTC) - ts) < timedelta(hours=1)


def test_step_instrument_times_and_errors(factory: sessionmaker[Session], campaign_id: int) -> None:
    with transaction(factory) as s:
        e = add_experiment(s, campaign_id, {"x1": 0.1}, status=ES.QUEUED)
        set_experiment_status(s, e, ES.RUNNING)
        step = add_step(
            s, e, index=0, kind="station", action="measure", parameters={"x1": 0.1},
            request_id="req-a",
        )  # fmt: skip
        set_step_status(s, step, StepStatus.RUNNING, instrument="station-1", started_at=T0)
        set_step_status(
            s, step, StepStatus.FAILED, error="action_failed: jammed",
            finished_at=T0 + timedelta(seconds=3),
        )  # fmt: skip
    with transaction(factory) as s:
        step = s.get_one(StepRow, step.id)
        assert step.status is StepStatus.FAILED
        assert step.instrument == "station-1"
        assert step.error == "action_failed: jammed"
        assert step.started_at == T0
        assert step.finished_at == T0 + timedelta(seconds=3)
        assert step.sent_at is not None
        assert step.parameters == {"x1": 0.1}
        assert [st.id for st in steps_in_status(s, campaign_id, [StepStatus.FAILED])] == [step.id]
        assert steps_in_status(s, campaign_id, [StepStatus.RUNNING]) == []


def test_request_id_uniqueness_is_enforced_by_the_database(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    with transaction(factory) as s:
        e1 = add_experiment(s, campaign_id, {"x1": 0.1})
        e2 = add_experiment(s, campaign_id, {"x1": 0.2})
        add_step(s, e1, index=0, kind="k", action="a", parameters={}, request_id="dup")
    with pytest.raises(IntegrityError), transaction(factory) as s:
        add_step(s, e2, index=0, kind="k", action="a", parameters={}, request_id="dup")
    # (experiment, index, attempt) is unique as well; a re-run is a new attempt.
    with pytest.raises(IntegrityError), transaction(factory) as s:
        add_step(s, e1, index=0, kind="k", action="a", parameters={}, request_id="other")
    with transaction(factory) as s:
        rerun = add_step(
            s, e1, index=0, kind="k", action="a", parameters={}, request_id="dup-2",
            attempt=2, rerun=True,
        )  # fmt: skip
        assert (rerun.attempt, rerun.rerun, rerun.status) == (2, True, StepStatus.QUEUED)
        assert s.scalar(select(StepRow.id).where(StepRow.request_id == "dup")) is not None


def test_measurements_with_arrays_round_trip(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    pattern = [[0.0, 1.5, 2.0], [3.0, 4.0, 5.25]]
    with transaction(factory) as s:
        e = add_experiment(s, campaign_id, {"x1": 0.1})
        step = add_step(s, e, index=0, kind="k", action="a", parameters={}, request_id="m-1")
        rows = add_measurements(
            s,
            step,
            [
                Measurement("y", 1.25, uncertainty=0.1, unit="eV"),
                Measurement("xrd", array=pattern, unit="counts"),
                Measurement("trace", array=[1, 2, 3]),
            ],
        )
        s.flush()
        assert [r.id is not None for r in rows] == [True, True, True]
        with pytest.raises(StoreError, match="ragged"):
            add_measurements(s, step, [Measurement("bad", array=[[1, 2], [3]])])
    with transaction(factory) as s:
        got = {m.name: m for m in s.scalars(select(MeasurementRow))}
        assert set(got) == {"y", "xrd", "trace"}
        assert (got["y"].value, got["y"].uncertainty, got["y"].unit) == (1.25, 0.1, "eV")
        assert got["y"].array is None
        assert got["y"].shape is None
        assert got["xrd"].value is None
        assert got["xrd"].array == pattern
        assert got["xrd"].shape == [2, 3]
        assert got["trace"].shape == [3]
        assert {m.experiment_id for m in got.values()} == {e.id}
        assert {m.step_id for m in got.values()} == {step.id}


def test_decisions_are_stored(factory: sessionmaker[Session], campaign_id: int) -> None:
    decision = Decision(
        proposals=[Proposal({"x1": 0.1}, 0.5, "acquisition"), Proposal({"x1": 0.9})],
        planner="qlognei", version="1.0", seed=3, n_train=8, n_pending=2,
        candidate_scores=[0.5, 0.25], seconds=1.5, details={"phase": "bo"},
    )  # fmt: skip
    with transaction(factory) as s:
        row = add_decision(s, campaign_id, decision)
        for i, p in enumerate(decision.proposals):
            add_experiment(
                s, campaign_id, p.parameters, decision_id=row.id, proposal_index=i,
                origin=p.origin, score=p.score,
            )  # fmt: skip
    with transaction(factory) as s:
        exps = experiments_in_status(s, campaign_id, [ES.PROPOSED])
        assert [(x.decision_id, x.proposal_index, x.score) for x in exps] == [
            (row.id, 0, 0.5),
            (row.id, 1, None),
        ]
        assert exps[0].origin == "acquisition"
        d = exps[0]
        assert d.decision_id is not None
        stored = s.get_one(DecisionRow, d.decision_id)
        assert (stored.planner, stored.n_train, stored.n_pending, stored.n_proposed) == (
            "qlognei", 8, 2, 2,
        )  # fmt: skip
        assert stored.candidate_scores == [0.5, 0.25]
        assert stored.details == {"phase": "bo"}


# ----------------------------------------------------------------------------- read models


def test_observations_pending_and_counts(factory: sessionmaker[Session], campaign_id: int) -> None:
    with transaction(factory) as s:
        done = run_experiment(s, campaign_id, {"x1": 0.1}, ES.COMPLETED, {"y": 1.0, "cost": 4.0})
        # A re-run step measured y again: the latest step's value counts.
        rerun = add_step(
            s, done, index=0, kind="station", action="measure", parameters={},
            request_id="rerun-1", attempt=2, rerun=True,
        )  # fmt: skip
        add_measurements(s, rerun, [Measurement("y", 2.5), Measurement("noise", 9.0)])
        failed = run_experiment(s, campaign_id, {"x1": 0.2}, ES.FAILED)
        running = run_experiment(s, campaign_id, {"x1": 0.3}, ES.RUNNING)
        queued = run_experiment(s, campaign_id, {"x1": 0.4}, ES.QUEUED)
        proposed = run_experiment(s, campaign_id, {"x1": 0.5}, ES.PROPOSED)
        run_experiment(s, campaign_id, {"x1": 0.6}, ES.ABANDONED)
        interrupted = run_experiment(s, campaign_id, {"x1": 0.7}, ES.INTERRUPTED)
        partial = run_experiment(s, campaign_id, {"x1": 0.8}, ES.COMPLETED, {"y": 3.0})
        other = create_campaign(s, make_spec("other"), seed=0, max_experiments=1)
        run_experiment(s, other.id, {"x1": 0.9}, ES.COMPLETED, {"y": 7.0, "cost": 1.0})
        run_experiment(s, other.id, {"x1": 0.9}, ES.QUEUED)
    objectives = make_spec().objectives
    with transaction(factory) as s:
        obs = observations(s, campaign_id, objectives)
        assert [o.experiment_id for o in obs] == [done.id, failed.id, partial.id]
        assert obs[0].parameters == {"x1": 0.1}
        assert obs[0].objectives == {"y": 2.5, "cost": 4.0}
        assert obs[0].feasible is True
        assert (obs[1].objectives, obs[1].feasible) == ({}, False)
        assert (obs[2].objectives, obs[2].feasible) == ({"y": 3.0}, False)

        assert pending_parameters(s, campaign_id) == [
            {"x1": 0.3}, {"x1": 0.4}, {"x1": 0.5}, {"x1": 0.7},
        ]  # fmt: skip
        assert [x.id for x in experiments_in_status(s, campaign_id, [ES.QUEUED, ES.RUNNING])] == [
            running.id,
            queued.id,
        ]
        counts = count_by_status(s, campaign_id)
        assert counts == {
            ES.PROPOSED: 1, ES.QUEUED: 1, ES.RUNNING: 1, ES.COMPLETED: 2, ES.FAILED: 1,
            ES.INTERRUPTED: 1, ES.ABANDONED: 1,
        }  # fmt: skip
        assert all(isinstance(k, ExperimentStatus) for k in counts)
        running_steps = steps_in_status(s, campaign_id, [StepStatus.RUNNING])
        assert {st.experiment_id for st in running_steps} == {
            failed.id,
            running.id,
            interrupted.id,
        }
        assert proposed.status is ES.PROPOSED


def test_export_rows(factory: sessionmaker[Session], campaign_id: int) -> None:
    decision = Decision(proposals=[Proposal({"x1": 0.1})], planner="sobol", version="1", seed=0,
                        n_train=0)  # fmt: skip
    with transaction(factory) as s:
        d = add_decision(s, campaign_id, decision)
        done = run_experiment(
            s, campaign_id, {"x1": 0.1, "x2": 0.2, "solvent": "water"}, ES.COMPLETED,
            {"y": 1.0, "cost": 4.0}, decision_id=d.id,
        )  # fmt: skip
        rerun = add_step(
            s, done, index=0, kind="station", action="measure", parameters={},
            request_id="rerun-x", attempt=2, rerun=True,
        )  # fmt: skip
        set_step_status(s, rerun, StepStatus.RUNNING, instrument="station-2")
        set_step_status(s, rerun, StepStatus.COMPLETED)
        add_measurements(s, rerun, [Measurement("y", 1.5)])
        queued = run_experiment(s, campaign_id, {"x1": 0.3, "x2": 0.4, "solvent": "ethanol"},
                                ES.QUEUED)  # fmt: skip
        other = create_campaign(s, make_spec("other", ("z",)), seed=0, max_experiments=1)
        run_experiment(s, other.id, {"z": 0.5, "solvent": "water"}, ES.FAILED)

    with transaction(factory) as s:
        rows = export_rows(s, "demo")
    assert [r["id"] for r in rows] == [done.id, queued.id]
    first, second = rows
    assert list(first) == [
        "id", "campaign", "status", "param.x1", "param.x2", "param.solvent", "obj.y",
        "obj.cost", "planner", "decision_id", "instruments", "created_at", "started_at",
        "finished_at", "attempts", "rerun", "cost", "sample", "sample_state", "sample_location",
        "waiting_for",
    ]  # fmt: skip
    assert first["campaign"] == "demo"
    assert first["status"] == "COMPLETED"
    assert (first["param.x1"], first["param.x2"], first["param.solvent"]) == (0.1, 0.2, "water")
    assert (first["obj.y"], first["obj.cost"]) == (1.5, 4.0)
    assert (first["planner"], first["decision_id"]) == ("sobol", d.id)
    assert first["instruments"] == "station-1,station-2"
    assert (first["attempts"], first["rerun"]) == (2, True)
    assert first["cost"] is None  # no cost was recorded with its decision
    for key in ("created_at", "started_at", "finished_at"):
        parsed = datetime.fromisoformat(first[key])
        assert parsed.utcoffset() == timedelta(0)
    assert second["status"] == "QUEUED"
    assert (second["obj.y"], second["planner"], second["decision_id"]) == (None, None, None)
    assert (second["instruments"], second["attempts"], second["rerun"]) == ("", 0, False)
    assert (second["started_at"], second["finished_at"]) == (None, None)

    with transaction(factory) as s:
        everything = export_rows(s, None)
        assert [r["campaign"] for r in everything] == ["demo", "demo", "other"]
        assert all(list(r) == list(everything[0]) for r in everything)
        assert "param.z" in everything[0]
        assert everything[2]["param.z"] == 0.5
        assert everything[2]["param.x1"] is None
        with pytest.raises(StoreError, match="nope"):
            export_rows(s, "nope")


def test_export_runs_a_fixed_number_of_queries(
    engine: Engine, factory: sessionmaker[Session], campaign_id: int
) -> None:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    def n_queries() -> int:
        statements.clear()
        event.listen(engine, "before_cursor_execute", count)
        try:
            with transaction(factory) as s:
                export_rows(s, "demo")
                observations(s, campaign_id, make_spec().objectives)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(statements)

    with transaction(factory) as s:
        for i in range(3):
            run_experiment(s, campaign_id, {"x1": i / 10}, ES.COMPLETED, {"y": i, "cost": i})
    few = n_queries()
    with transaction(factory) as s:
        for i in range(30):
            run_experiment(s, campaign_id, {"x1": i / 100}, ES.COMPLETED, {"y": i, "cost": i})
    assert n_queries() == few


def test_events_are_append_only_and_ordered(
    factory: sessionmaker[Session], campaign_id: int
) -> None:
    with transaction(factory) as s:
        rows = [
            add_event(s, "instrument.fault", f"fault {i}", campaign_id=campaign_id,
                      instrument="station-1", data={"i": i})
            for i in range(5)
        ]  # fmt: skip
        add_event(s, "controller.started", "global event")
        s.flush()
        ids = [r.id for r in rows]
    assert ids == sorted(ids)
    with transaction(factory) as s:
        page1 = events(s, campaign_id, limit=3)
        page2 = events(s, campaign_id, since_id=page1[-1].id, limit=3)
        seen = [e.id for e in page1 + page2]
        assert seen == sorted(seen)
        assert len(set(seen)) == len(seen) == 6  # campaign.created + 5 faults
        assert [e.data.get("i") for e in page1 + page2][1:] == [0, 1, 2, 3, 4]
        assert page2[-1].instrument == "station-1"
        assert events(s, campaign_id, since_id=seen[-1]) == []
        assert [e.kind for e in events(s, None)][-1] == "controller.started"

    def rewrite(event_id: int) -> None:
        with transaction(factory) as s:
            s.get_one(EventRow, event_id).message = "rewritten"
            s.flush()

    def delete(event_id: int) -> None:
        with transaction(factory) as s:
            s.delete(s.get_one(EventRow, event_id))
            s.flush()

    with pytest.raises(StoreError, match="append-only"):
        rewrite(ids[0])
    with pytest.raises(StoreError, match="append-only"):
        delete(ids[1])
    with transaction(factory) as s:
        assert s.get_one(EventRow, ids[0]).message == "fault 0"
        assert s.get(EventRow, ids[1]) is not None
