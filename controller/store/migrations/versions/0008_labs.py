"""Labs: the lab file, lab instruments' state, grants of lab units, waiting campaigns.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

Frozen copy of ``LabRow``, ``LabInstrumentRow``, ``LabUnitRow``, ``LabWaitRow`` and
``CampaignRow.priority`` in ``models/tables.py`` at this revision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "labs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("spec", _json(), nullable=False),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_labs"),
        sa.UniqueConstraint("name", name="uq_labs_name"),
    )
    op.create_table(
        "lab_instruments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lab_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=128), nullable=False),
        sa.Column("address", sa.String(length=256), nullable=False),
        sa.Column("gateway", sa.String(length=128), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("until", _ts(), nullable=True),
        sa.Column("changed_by", sa.String(length=64), nullable=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(["lab_id"], ["labs.id"], name="fk_lab_instruments_lab_id_labs"),
        sa.PrimaryKeyConstraint("id", name="pk_lab_instruments"),
        sa.UniqueConstraint("lab_id", "name", name="uq_lab_instruments_lab_id_name"),
    )
    op.create_table(
        "lab_units",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lab_id", sa.Integer(), nullable=False),
        sa.Column("unit", sa.String(length=128), nullable=False),
        sa.Column("pool", sa.String(length=160), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("holder", sa.String(length=200), nullable=True),
        sa.Column("experiment_id", sa.Integer(), nullable=True),
        sa.Column("granted_at", _ts(), nullable=True),
        sa.Column("expires_at", _ts(), nullable=True),
        sa.ForeignKeyConstraint(["lab_id"], ["labs.id"], name="fk_lab_units_lab_id_labs"),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name="fk_lab_units_campaign_id_campaigns"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_lab_units"),
        sa.UniqueConstraint("lab_id", "unit", name="uq_lab_units_lab_id_unit"),
    )
    op.create_table(
        "lab_waits",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("lab_id", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("pools", _json(), nullable=False),
        sa.Column("since", _ts(), nullable=False),
        sa.Column("expires_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name="fk_lab_waits_campaign_id_campaigns"
        ),
        sa.ForeignKeyConstraint(["lab_id"], ["labs.id"], name="fk_lab_waits_lab_id_labs"),
        sa.PrimaryKeyConstraint("campaign_id", name="pk_lab_waits"),
    )


def downgrade() -> None:
    op.drop_table("lab_waits")
    op.drop_table("lab_units")
    op.drop_table("lab_instruments")
    op.drop_table("labs")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("priority")
