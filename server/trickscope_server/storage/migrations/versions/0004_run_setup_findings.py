"""The training setup the agent saw, and the findings it made inside the training process.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

Existing runs get an empty setup and no agent findings (``{}``): the health rules fall back to
config keys and the optional reporters' series.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("setup", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(
            sa.Column("agent_findings", sa.JSON(), nullable=False, server_default="{}")
        )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("agent_findings")
        batch.drop_column("setup")
