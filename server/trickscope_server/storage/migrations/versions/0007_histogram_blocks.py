"""Histograms stored as blocks: one row per (run, histogram family, batch).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

Histograms stored before this revision stay one row per (run, name, step): every read merges
the two forms (importers and older agents still send histograms one name at a time), so nothing
is converted and the upgrade is quick on a large database.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "histogram_layouts",
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column(
            "run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("family", sa.String(512), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("layers", sa.Text(), nullable=False),
        sa.UniqueConstraint(
            "run_id", "family", "digest", name="uq_histogram_layouts_run_family_digest"
        ),
    )
    op.create_table(
        "histogram_blocks",
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column(
            "run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "layout_id",
            _BIG_ID,
            sa.ForeignKey("histogram_layouts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("step_min", sa.BigInteger(), nullable=False),
        sa.Column("step_max", sa.BigInteger(), nullable=False),
        sa.Column("steps_count", sa.Integer(), nullable=False),
        sa.Column("bins", sa.Integer(), nullable=False),
        sa.Column("steps", sa.LargeBinary(), nullable=False),
        sa.Column("times", sa.LargeBinary(), nullable=False),
        sa.Column("lo", sa.LargeBinary(), nullable=False),
        sa.Column("hi", sa.LargeBinary(), nullable=False),
        sa.Column("nonfinite", sa.LargeBinary(), nullable=False),
        sa.Column("counts", sa.LargeBinary(), nullable=False),
    )
    op.create_index(
        "ix_histogram_blocks_run_layout_step",
        "histogram_blocks",
        ["run_id", "layout_id", "step_min"],
    )


def downgrade() -> None:
    op.drop_index("ix_histogram_blocks_run_layout_step", table_name="histogram_blocks")
    op.drop_table("histogram_blocks")
    op.drop_table("histogram_layouts")
