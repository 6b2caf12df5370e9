"""Instruments (the controller's view of each) and operator commands for a running controller.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

Frozen copy of ``InstrumentRow`` and ``CommandRow`` in ``models/tables.py`` at this revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.JSON:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "instruments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=128), nullable=False),
        sa.Column("address", sa.String(length=256), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("in_service", sa.Boolean(), nullable=False),
        sa.Column("consecutive_faults", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("driver", sa.String(length=128), nullable=True),
        sa.Column("last_seen_at", _ts(), nullable=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name="fk_instruments_campaign_id_campaigns"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_instruments"),
        sa.UniqueConstraint("campaign_id", "name", name="uq_instruments_campaign_id_name"),
    )
    op.create_table(
        "commands",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("command", sa.String(length=32), nullable=False),
        sa.Column("args", _json(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("applied_at", _ts(), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name="fk_commands_campaign_id_campaigns"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_commands"),
    )
    op.create_index(
        "ix_commands_campaign_status", "commands", ["campaign_id", "status"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_commands_campaign_status", table_name="commands")
    op.drop_table("commands")
    op.drop_table("instruments")
