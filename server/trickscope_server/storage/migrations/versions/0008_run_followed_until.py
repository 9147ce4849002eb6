"""Until when a run is followed live (``runs.followed_until``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

Existing runs get NULL: nobody follows them until a stream opens, which sets it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("followed_until", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("followed_until")
