"""Per-layer statistics stored as blocks: one row per (run, statistic, batch).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

Points stored before this revision stay where they are: per-series chunks remain a storage form
that every read merges with the blocks (older agents still send series one by one), so nothing
is converted and the upgrade is quick on a large database.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "blocks",
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column(
            "run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("family", sa.String(512), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("step_min", sa.BigInteger(), nullable=False),
        sa.Column("step_max", sa.BigInteger(), nullable=False),
        sa.Column("steps_count", sa.Integer(), nullable=False),
        sa.Column("members", sa.LargeBinary(), nullable=False),
        sa.Column("steps", sa.LargeBinary(), nullable=False),
        sa.Column("times", sa.LargeBinary(), nullable=False),
        sa.Column("values", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_blocks_run_family_seq", "blocks", ["run_id", "family", "seq"])
    op.create_index("ix_blocks_run_seq", "blocks", ["run_id", "seq"])
    op.create_table(
        "block_summaries",
        sa.Column(
            "run_id",
            sa.String(64),
            sa.ForeignKey("runs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("records", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("block_summaries")
    op.drop_index("ix_blocks_run_seq", table_name="blocks")
    op.drop_index("ix_blocks_run_family_seq", table_name="blocks")
    op.drop_table("blocks")
