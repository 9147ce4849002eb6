"""Per-run ingest sequence, chunk compaction and digests, histograms.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01

Existing chunks keep their order: their global autoincrement id becomes their sequence (it grows
with ingest, so per run it is in ingest order) and each run's ``last_seq`` starts at its largest.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("last_seq", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("series") as batch:
        batch.add_column(
            sa.Column("pending_chunks", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("chunks") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("seq_lo", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("origins", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("dsteps", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("dvalues", sa.LargeBinary(), nullable=True))
    op.execute("UPDATE chunks SET seq = id, seq_lo = id")
    op.execute(
        "UPDATE runs SET last_seq = COALESCE("
        "(SELECT MAX(chunks.id) FROM chunks WHERE chunks.run_id = runs.id), 0)"
    )
    with op.batch_alter_table("chunks") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch.alter_column("seq_lo", existing_type=sa.BigInteger(), nullable=False)
        batch.drop_index("ix_chunks_run_id")
        batch.create_index("ix_chunks_run_seq", ["run_id", "seq"])

    op.create_table(
        "histograms",
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column(
            "run_id",
            sa.String(64),
            sa.ForeignKey("runs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("bins", sa.Integer(), nullable=False),
        sa.Column("lo", sa.Float(), nullable=True),
        sa.Column("hi", sa.Float(), nullable=True),
        sa.Column("counts", sa.LargeBinary(), nullable=False),
        sa.Column("nonfinite", sa.Float(), nullable=False),
        sa.Column("wall_time", sa.Float(), nullable=False),
        sa.UniqueConstraint("run_id", "name", "step", name="uq_histograms_run_name_step"),
    )


def downgrade() -> None:
    op.drop_table("histograms")
    with op.batch_alter_table("chunks") as batch:
        batch.drop_index("ix_chunks_run_seq")
        batch.create_index("ix_chunks_run_id", ["run_id", "id"])
        for column in ("dvalues", "dsteps", "origins", "seq_lo", "seq"):
            batch.drop_column(column)
    with op.batch_alter_table("series") as batch:
        batch.drop_column("pending_chunks")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("last_seq")
