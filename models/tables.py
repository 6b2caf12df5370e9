"""SQLAlchemy 2.0 tables of the experiment store.

The store is the source of truth of a campaign: every experiment is written before it is
dispatched, every step carries the request id the instrument saw, every planner decision is
kept with what is needed to replay it, ``events`` is an append-only log, and
``audit_entries`` a hash-chained record of every event and operator command. Schema
changes go through the Alembic migrations in ``controller/store/migrations``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from models.status import (
    CampaignStatus,
    CommandStatus,
    ExperimentStatus,
    InstrumentState,
    LabInstrumentState,
    SampleState,
    StepStatus,
    TaskStatus,
)


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Constraint names, so later migrations can alter them (SQLite's batch mode needs names)."""


class Base(DeclarativeBase):
    """Declarative base of every sdlab table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)

    type_annotation_map = {dict[str, Any]: JSONType, list[Any]: JSONType}


def _status(
    enum: type[
        CampaignStatus
        | ExperimentStatus
        | StepStatus
        | InstrumentState
        | LabInstrumentState
        | CommandStatus
        | SampleState
        | TaskStatus
    ],
) -> Enum:
    """A status column: a plain VARCHAR(16) in the database, the enum in Python."""
    return Enum(enum, native_enum=False, length=16, validate_strings=True, create_constraint=False)


class CampaignRow(Base):
    """A campaign: its spec as loaded, status and budget."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    status: Mapped[CampaignStatus] = mapped_column(_status(CampaignStatus))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    spec_hash: Mapped[str] = mapped_column(String(64))
    max_experiments: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    # Higher goes first when campaigns wait for the same lab instruments or resources.
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    experiments: Mapped[list[ExperimentRow]] = relationship(back_populates="campaign")


class DecisionRow(Base):
    """One planner decision (one ``ask``), with what is needed to replay it."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    planner: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int] = mapped_column(Integer)
    n_train: Mapped[int] = mapped_column(Integer)
    n_pending: Mapped[int] = mapped_column(Integer)
    n_proposed: Mapped[int] = mapped_column(Integer)
    candidate_scores: Mapped[list[Any]] = mapped_column(JSONType)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType)
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ExperimentRow(Base):
    """One experiment: a point of the search space run through the workflow."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id"))
    status: Mapped[ExperimentStatus] = mapped_column(_status(ExperimentStatus))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONType)
    proposal_index: Mapped[int] = mapped_column(Integer, default=0)
    origin: Mapped[str | None] = mapped_column(String(64))
    score: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What a waiting experiment waits for, in words (written by the controller on change).
    waiting_for: Mapped[str | None] = mapped_column(Text)
    # Position of the experiment in what the campaign's planner knows (see
    # ``controller.store.queries.known_observations``): set when it is COMPLETED or FAILED,
    # or ABANDONED as infeasible (refused by the safety gate, rejected by an operator);
    # ``None`` while the planner is not to learn from it.
    known_seq: Mapped[int | None] = mapped_column(Integer)

    campaign: Mapped[CampaignRow] = relationship(back_populates="experiments")
    steps: Mapped[list[StepRow]] = relationship(back_populates="experiment", order_by="StepRow.id")
    measurements: Mapped[list[MeasurementRow]] = relationship(
        back_populates="experiment", order_by="MeasurementRow.id"
    )

    __table_args__ = (
        Index("ix_experiments_campaign_status", "campaign_id", "status"),
        Index("ix_experiments_campaign_known", "campaign_id", "known_seq"),
    )


class StepRow(Base):
    """One instrument action of an experiment, with the request id the instrument saw.

    A step that is run again after an interruption is a new row with ``attempt`` one higher
    and ``rerun`` set, so a re-run is never mistaken for a duplicate.
    """

    __tablename__ = "steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    rerun: Mapped[bool] = mapped_column(Boolean, default=False)
    kind: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(128))
    instrument: Mapped[str | None] = mapped_column(String(128))
    request_id: Mapped[str] = mapped_column(String(128), unique=True)
    status: Mapped[StepStatus] = mapped_column(_status(StepStatus))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # instrument's clock
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    experiment: Mapped[ExperimentRow] = relationship(back_populates="steps")

    __table_args__ = (UniqueConstraint("experiment_id", "index", "attempt"),)


class MeasurementRow(Base):
    """One measured quantity: a scalar (``value``) or a raw array (``array``, with ``shape``)."""

    __tablename__ = "measurements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id"), index=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float | None] = mapped_column(Float)
    uncertainty: Mapped[float | None] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(32), default="")
    array: Mapped[list[Any] | None] = mapped_column(JSONType)
    shape: Mapped[list[Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    experiment: Mapped[ExperimentRow] = relationship(back_populates="measurements")


class SampleRow(Base):
    """One experiment's sample: which container holds it, where it is, what became of it.

    Its moves are ``sample.moved`` events (from, to, step) in ``events``; this row is where
    it is now.
    """

    __tablename__ = "samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id"), unique=True)
    label: Mapped[str] = mapped_column(String(128))
    container: Mapped[str | None] = mapped_column(String(128))
    location: Mapped[str] = mapped_column(String(128))
    state: Mapped[SampleState] = mapped_column(_status(SampleState))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class TaskRow(Base):
    """A task for a person: one action of a ``manual`` instrument (``controller/manual.py``).

    Keyed by the request id the controller sent, so a restarted instrument server finds it
    again. Who claimed, entered or failed it, and when, is also in ``events``.
    """

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), unique=True)
    instrument: Mapped[str] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(128))
    instructions: Mapped[str] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONType)
    outputs: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    status: Mapped[TaskStatus] = mapped_column(_status(TaskStatus), index=True)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    values: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    reason: Mapped[str | None] = mapped_column(Text)
    finished_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EventRow(Base):
    """An entry of the append-only audit log: what happened, to what, and who did it."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"), index=True)
    experiment_id: Mapped[int | None] = mapped_column(ForeignKey("experiments.id"))
    instrument: Mapped[str | None] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(64), index=True)
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    actor: Mapped[str] = mapped_column(String(64), default="controller")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InstrumentRow(Base):
    """The controller's latest view of one instrument of a campaign (one row, updated).

    What happened to it over time is in ``events``; this row is what the dashboard shows now.
    """

    __tablename__ = "instruments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(128))
    address: Mapped[str] = mapped_column(String(256))
    state: Mapped[InstrumentState] = mapped_column(_status(InstrumentState))
    in_service: Mapped[bool] = mapped_column(Boolean, default=True)
    consecutive_faults: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    driver: Mapped[str | None] = mapped_column(String(128))
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (UniqueConstraint("campaign_id", "name"),)


class CommandRow(Base):
    """An operator command for a running controller (pause, resume, abort, approve, ...).

    The dashboard and the command line write a PENDING row; the controller that runs the
    campaign picks it up, applies it and marks it APPLIED or REFUSED with the reason. A
    command therefore reaches a controller in another process or on another machine, and
    survives a controller restart.
    """

    __tablename__ = "commands"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    command: Mapped[str] = mapped_column(String(32))
    args: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    actor: Mapped[str] = mapped_column(String(64))
    status: Mapped[CommandStatus] = mapped_column(_status(CommandStatus))
    result: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_commands_campaign_status", "campaign_id", "status"),)


class ControllerLeaseRow(Base):
    """Which controller runs a campaign now: at most one row per campaign.

    A controller takes the lease before it sends anything and renews it every few seconds;
    another controller (a second ``sdlab run``, or the dashboard's Start) is refused while
    the lease is live, and takes it over once it has expired or its holder's process is
    known to be dead. See :mod:`controller.store.lease`.
    """

    __tablename__ = "controller_leases"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    renewed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LabRow(Base):
    """A lab file as ``sdlab lab apply`` recorded it (see :mod:`models.lab`)."""

    __tablename__ = "labs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    spec_hash: Mapped[str] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class LabInstrumentRow(Base):
    """The state of one lab instrument, recorded once and seen by every campaign."""

    __tablename__ = "lab_instruments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(128))
    address: Mapped[str] = mapped_column(String(256))
    gateway: Mapped[str | None] = mapped_column(String(128))
    state: Mapped[LabInstrumentState] = mapped_column(_status(LabInstrumentState))
    reason: Mapped[str | None] = mapped_column(Text)
    until: Mapped[datetime | None] = mapped_column(UTCDateTime)  # a quarantine's end
    changed_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (UniqueConstraint("lab_id", "name"),)


class LabUnitRow(Base):
    """One grantable unit of a lab (an instrument, or a unit of a resource) and its grant.

    A grant is taken by compare-and-set: the row is updated only if nobody holds it or its
    holder's lease has expired (``expires_at``), so two controllers cannot both take it.
    ``holder`` is the controller's lease id; the controller renews ``expires_at`` with its
    campaign lease and clears the row when the step (or, for a container, the experiment)
    ends. See :mod:`controller.store.lab`.
    """

    __tablename__ = "lab_units"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    unit: Mapped[str] = mapped_column(String(128))
    pool: Mapped[str] = mapped_column(String(160))  # "kind:<kind>" or the resource name
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"))
    holder: Mapped[str | None] = mapped_column(String(200))
    experiment_id: Mapped[int | None] = mapped_column(Integer)
    granted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("lab_id", "unit"),)


class LabWaitRow(Base):
    """A campaign that waits for lab units: the pools it waits on, and since when.

    Campaigns waiting on a pool are served by priority, then by how long they have waited:
    a campaign takes a unit only if the free units outnumber the campaigns ahead of it.
    """

    __tablename__ = "lab_waits"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    lab_id: Mapped[int] = mapped_column(ForeignKey("labs.id"))
    holder: Mapped[str] = mapped_column(String(200))
    pools: Mapped[list[Any]] = mapped_column(JSONType)
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UserRow(Base):
    """A dashboard user: a name, a role, and optionally a password for the login form."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(256))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiTokenRow(Base):
    """An API token of a user, stored as a salted KDF hash; ``prefix`` finds it again.

    The token itself is shown once, when it is created, and never stored.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    token_hash: Mapped[str] = mapped_column(String(256))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebSessionRow(Base):
    """A browser session opened by the login form.

    ``token_hash`` is the SHA-256 of the cookie's random value (the cookie is 256 random
    bits, so a fast hash suffices); ``csrf_token`` must accompany every form or script
    request that changes something.
    """

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditEntryRow(Base):
    """One entry of the hash-chained audit record (21 CFR Part 11 style audit trail).

    Entries are appended, never changed (the database refuses UPDATE and DELETE); each holds
    the hash of the entry before it, so an entry edited, removed, inserted or moved breaks
    the chain at that entry. ``hash`` is the SHA-256 of the canonical JSON of every other
    column (see :mod:`controller.store.audit`). Values are kept as text exactly as they were
    hashed: ``recorded_at`` an ISO 8601 time with its zone, ``old_value`` and ``new_value``
    canonical JSON.

    Attributes:
        seq: Position in the chain, from 1, without gaps.
        prev_hash: ``hash`` of entry ``seq - 1`` (64 zeros for the first).
        hash: This entry's hash.
        recorded_at: Server time of the append, with zone.
        actor: Who did it (``controller``, ``cli:<user>``, ``operator:<name>``, ...).
        action: What was done: the event kind, or ``command.<name>`` for an operator command.
        meaning: What a signature means (``"approved for execution"``), for approvals and
            rejections; otherwise empty.
    """

    __tablename__ = "audit_entries"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    campaign_id: Mapped[int | None] = mapped_column(Integer, index=True)
    experiment_id: Mapped[int | None] = mapped_column(Integer)
    instrument: Mapped[str | None] = mapped_column(String(128))
    event_id: Mapped[int | None] = mapped_column(Integer)
    command_id: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text)
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    meaning: Mapped[str | None] = mapped_column(String(128))


class AuditHeadRow(Base):
    """The head of the audit chain: one row (``id`` 1), its last ``seq`` and ``hash``.

    Appending updates this row first, which serialises appenders on every database (a row
    lock on PostgreSQL, the write lock on SQLite), and lets a removal of the last entries be
    told from a chain that simply ends.
    """

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
