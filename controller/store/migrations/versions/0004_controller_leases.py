"""Controller leases: at most one controller runs a campaign at a time.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

Frozen copy of ``ControllerLeaseRow`` in ``models/tables.py`` at this revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "controller_leases",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("acquired_at", _ts(), nullable=False),
        sa.Column("renewed_at", _ts(), nullable=False),
        sa.Column("expires_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name="fk_controller_leases_campaign_id_campaigns"
        ),
        sa.PrimaryKeyConstraint("campaign_id", name="pk_controller_leases"),
    )


def downgrade() -> None:
    op.drop_table("controller_leases")
