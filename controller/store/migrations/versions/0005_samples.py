"""Samples (which container holds each experiment's sample, where it is) and what each
waiting experiment waits for.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

Frozen copy of ``SampleRow`` and ``ExperimentRow.waiting_for`` in ``models/tables.py`` at
this revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("container", sa.String(length=128), nullable=True),
        sa.Column("location", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name="fk_samples_campaign_id_campaigns"
        ),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"], name="fk_samples_experiment_id_experiments"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_samples"),
        sa.UniqueConstraint("experiment_id", name="uq_samples_experiment_id"),
    )
    op.create_index("ix_samples_campaign_id", "samples", ["campaign_id"], unique=False)
    with op.batch_alter_table("experiments") as batch:
        batch.add_column(sa.Column("waiting_for", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.drop_column("waiting_for")
    op.drop_index("ix_samples_campaign_id", table_name="samples")
    op.drop_table("samples")
