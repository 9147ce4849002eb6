"""Run liveness (when the agent was last heard from) and access tokens.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

Existing runs get no ``last_seen_at``: a run is judged by its heartbeat only once one arrived,
so runs stored before this revision keep the status they had. Tokens are stored as the SHA-256
of the secret, never the secret itself.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("last_seen_at", sa.Float(), nullable=True))
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_used_at", sa.Float(), nullable=True),
        sa.Column("revoked_at", sa.Float(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("tokens")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("last_seen_at")
