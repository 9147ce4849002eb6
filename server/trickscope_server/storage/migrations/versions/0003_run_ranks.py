"""The ranks of a distributed run: each rank's host and process.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

Existing runs get no ranks (``{}``): they were single-process, or recorded by rank 0 alone.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("ranks", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("ranks")
