"""Initial schema: campaigns, decisions, experiments, steps, measurements, events.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Written out by hand (frozen copy of ``models/tables.py`` at this revision): migrations never
import the live models, whose definitions move on. ``UTCDateTime`` is a Python-side type over
``DateTime(timezone=True)``, ``JSONType`` is ``JSON`` with ``JSONB`` on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.JSON:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("spec", _json(), nullable=False),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("max_experiments", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_campaigns"),
        sa.UniqueConstraint("name", name="uq_campaigns_name"),
        sa.UniqueConstraint("uid", name="uq_campaigns_uid"),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("planner", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("n_train", sa.Integer(), nullable=False),
        sa.Column("n_pending", sa.Integer(), nullable=False),
        sa.Column("n_proposed", sa.Integer(), nullable=False),
        sa.Column("candidate_scores", _json(), nullable=False),
        sa.Column("details", _json(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], name="fk_decisions_campaign_id_campaigns"),
        sa.PrimaryKeyConstraint("id", name="pk_decisions"),
    )
    op.create_index("ix_decisions_campaign_id", "decisions", ["campaign_id"], unique=False)
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("decision_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("parameters", _json(), nullable=False),
        sa.Column("proposal_index", sa.Integer(), nullable=False),
        sa.Column("origin", sa.String(length=64), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], name="fk_experiments_campaign_id_campaigns"),
        sa.ForeignKeyConstraint(["decision_id"], ["decisions.id"], name="fk_experiments_decision_id_decisions"),
        sa.PrimaryKeyConstraint("id", name="pk_experiments"),
    )
    op.create_index(
        "ix_experiments_campaign_status", "experiments", ["campaign_id", "status"], unique=False
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("experiment_id", sa.Integer(), nullable=True),
        sa.Column("instrument", sa.String(length=128), nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", _json(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], name="fk_events_campaign_id_campaigns"),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"], name="fk_events_experiment_id_experiments"),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_campaign_id", "events", ["campaign_id"], unique=False)
    op.create_index("ix_events_kind", "events", ["kind"], unique=False)
    op.create_table(
        "steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("rerun", sa.Boolean(), nullable=False),
        sa.Column("kind", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=128), nullable=False),
        sa.Column("instrument", sa.String(length=128), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("parameters", _json(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("queued_at", _ts(), nullable=False),
        sa.Column("sent_at", _ts(), nullable=True),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"], name="fk_steps_experiment_id_experiments"),
        sa.PrimaryKeyConstraint("id", name="pk_steps"),
        sa.UniqueConstraint("experiment_id", "index", "attempt", name="uq_steps_experiment_id_index_attempt"),
        sa.UniqueConstraint("request_id", name="uq_steps_request_id"),
    )
    op.create_index("ix_steps_experiment_id", "steps", ["experiment_id"], unique=False)
    op.create_table(
        "measurements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("step_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("uncertainty", sa.Float(), nullable=True),
        sa.Column("unit", sa.String(length=32), nullable=False),
        sa.Column("array", _json(), nullable=True),
        sa.Column("shape", _json(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"], name="fk_measurements_experiment_id_experiments"),
        sa.ForeignKeyConstraint(["step_id"], ["steps.id"], name="fk_measurements_step_id_steps"),
        sa.PrimaryKeyConstraint("id", name="pk_measurements"),
    )
    op.create_index(
        "ix_measurements_experiment_id", "measurements", ["experiment_id"], unique=False
    )
    op.create_index("ix_measurements_step_id", "measurements", ["step_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_measurements_step_id", table_name="measurements")
    op.drop_index("ix_measurements_experiment_id", table_name="measurements")
    op.drop_table("measurements")
    op.drop_index("ix_steps_experiment_id", table_name="steps")
    op.drop_table("steps")
    op.drop_index("ix_events_kind", table_name="events")
    op.drop_index("ix_events_campaign_id", table_name="events")
    op.drop_table("events")
    op.drop_index("ix_experiments_campaign_status", table_name="experiments")
    op.drop_table("experiments")
    op.drop_index("ix_decisions_campaign_id", table_name="decisions")
    op.drop_table("decisions")
    op.drop_table("campaigns")
