"""Run owner: the pid and host name of the process that started a run, to spot dead runs.

Rows from before this revision keep NULL in both columns. Adding nullable columns needs no table
copy, even in SQLite batch mode, so existing rows are kept as they are.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 01:15:15.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pid", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("hostname", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("hostname")
        batch_op.drop_column("pid")
