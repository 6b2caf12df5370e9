"""What the planner knows: ``experiments.known_seq``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

Frozen copy of ``ExperimentRow.known_seq`` and its index in ``models/tables.py`` at this
revision. Experiments already COMPLETED or FAILED are numbered by id, the order in which a
restarted controller taught them to its planner before this revision; experiments ABANDONED
earlier stay unknown, as they were to a restarted planner.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.add_column(sa.Column("known_seq", sa.Integer(), nullable=True))
        batch.create_index("ix_experiments_campaign_known", ["campaign_id", "known_seq"])
    op.execute("UPDATE experiments SET known_seq = id WHERE status IN ('COMPLETED', 'FAILED')")


def downgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.drop_index("ix_experiments_campaign_known")
        batch.drop_column("known_seq")
