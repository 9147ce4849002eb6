"""Database rows: runs, the series dictionary with its summaries, point chunks and batch ids.

Points are stored in chunks (one row per series per batch, packed arrays) because one row per
point cannot reach the ingest target; see docs/architecture.md, Storage.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias); PostgreSQL gets BIGINT so
# the ingest sequence never wraps.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base of every table."""


class RunRow(Base):
    """One training run. Times are Unix seconds (float): exact, portable and cheap to page on."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project: Mapped[str] = mapped_column(String(256), index=True)
    name: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    tags: Mapped[list[str]] = mapped_column(JSON)
    system: Mapped[dict[str, Any]] = mapped_column(JSON)
    layers: Mapped[list[str]] = mapped_column(JSON)
    # A distributed job's ranks: {"<rank>": system info of that rank's process}.
    ranks: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    # What the agent saw of the training setup (docs/diagnosis.md, section 1), replaced whole.
    setup: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    # Findings made inside the training process, keyed "<check>|<layer>" ("" for no layer).
    agent_findings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    # The run's ingest sequence: bumped once per stored batch while the batch's transaction holds
    # this row's lock, so per run the sequence commits in order (the SSE cursor relies on it).
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # When the agent was last heard from (any request for this run, heartbeats included): a
    # ``running`` run silent past the grace period reads as ``crashed``. NULL: no agent since.
    last_seen_at: Mapped[float | None] = mapped_column(Float)
    # Until when someone follows the run live (a dashboard's or a client's stream, in any
    # worker): each ingest answer says so, and the agent sends logged points at its fast
    # cadence only while it holds. NULL: never followed.
    followed_until: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_runs_created", "created_at", "id"),)


class SeriesRow(Base):
    """A series of a run, with the summary kept at ingest so listings never decode chunks.

    ``min_value``/``max_value`` are over finite values. SQLite stores a NaN as NULL, so a NULL
    ``last_value`` on a series with points means NaN.
    """

    __tablename__ = "series"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(512))
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    first_step: Mapped[int | None] = mapped_column(BigInteger)
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    last_value: Mapped[float | None] = mapped_column(Float)
    min_value: Mapped[float | None] = mapped_column(Float)
    max_value: Mapped[float | None] = mapped_column(Float)
    first_nonfinite_step: Mapped[int | None] = mapped_column(BigInteger)
    # Chunks stored since the series was last compacted: ingest triggers compaction past a bound.
    pending_chunks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_series_run_name"),)


class ChunkRow(Base):
    """Points of one series: from one batch (fresh) or merged from several (compacted).

    ``seq`` is the run's ingest sequence of the batch that stored the chunk; a compacted chunk
    spans ``seq_lo..seq`` and keeps each point's original sequence run-length encoded in
    ``origins`` (NULL on fresh chunks), so live clients resume exactly across a compaction.
    ``dsteps``/``dvalues`` hold a digest (per block of points, the minimum, the maximum and the
    non-finite edges) that coarse reads use instead of the points.
    """

    __tablename__ = "chunks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    step_min: Mapped[int] = mapped_column(BigInteger)
    step_max: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer)
    vmin: Mapped[float | None] = mapped_column(Float)
    vmax: Mapped[float | None] = mapped_column(Float)
    steps: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian int64
    values: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian float64, NaN/±Inf exact
    times: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian float64, Unix seconds
    seq: Mapped[int] = mapped_column(BigInteger)
    seq_lo: Mapped[int] = mapped_column(BigInteger)
    origins: Mapped[bytes | None] = mapped_column(LargeBinary)  # int64 pairs (seq, run length)
    dsteps: Mapped[bytes | None] = mapped_column(LargeBinary)
    dvalues: Mapped[bytes | None] = mapped_column(LargeBinary)

    __table_args__ = (
        Index("ix_chunks_run_seq", "run_id", "seq"),
        Index("ix_chunks_series_steps", "series_id", "step_min", "step_max"),
    )


class BlockRow(Base):
    """One statistic of many series from one batch: a members x steps block of points.

    A wide batch of per-layer statistics stores one of these per statistic (``family``, the text
    before the first ``/`` of its series' names) rather than one chunk per series: every member
    shares the block's steps and times. ``values`` is row-major, one row of ``steps_count``
    values per member (``members``: series ids, int64). Blocks are fresh data only: compaction
    turns a family's blocks into per-series chunks (see ``services/compact.py``).
    """

    __tablename__ = "blocks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    family: Mapped[str] = mapped_column(String(512))
    seq: Mapped[int] = mapped_column(BigInteger)
    step_min: Mapped[int] = mapped_column(BigInteger)
    step_max: Mapped[int] = mapped_column(BigInteger)
    steps_count: Mapped[int] = mapped_column(Integer)
    members: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian int64 series ids
    steps: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian int64, strictly increasing
    times: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian float64, Unix seconds
    values: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian float64, members x steps

    __table_args__ = (
        Index("ix_blocks_run_family_seq", "run_id", "family", "seq"),
        Index("ix_blocks_run_seq", "run_id", "seq"),
    )


class BlockSummaryRow(Base):
    """Summaries of the points a run's series received in blocks, one packed record each.

    A series' summary is its ``series`` row merged with its record here (the two describe
    disjoint steps: a batch that re-logs a step recounts the series into its row and clears the
    record).
    """

    __tablename__ = "block_summaries"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    records: Mapped[bytes] = mapped_column(LargeBinary)  # see storage/block_summaries.RECORD


class BatchRow(Base):
    """A batch id seen for a run: written in the same transaction as its points."""

    __tablename__ = "batches"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    points: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[float] = mapped_column(Float)


class HistogramRow(Base):
    """One histogram of a tensor family at one step; a re-logged (name, step) replaces it."""

    __tablename__ = "histograms"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(512))
    step: Mapped[int] = mapped_column(BigInteger)
    bins: Mapped[int] = mapped_column(Integer)
    lo: Mapped[float | None] = mapped_column(Float)
    hi: Mapped[float | None] = mapped_column(Float)
    counts: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian float64, ``bins`` of them
    nonfinite: Mapped[float] = mapped_column(Float)
    wall_time: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        UniqueConstraint("run_id", "name", "step", name="uq_histograms_run_name_step"),
    )


class HistogramLayoutRow(Base):
    """The layers of a run's histogram blocks of one family, stored once per distinct list (a
    run sends the same layers in every flush)."""

    __tablename__ = "histogram_layouts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    family: Mapped[str] = mapped_column(String(512))
    digest: Mapped[str] = mapped_column(String(64))  # SHA-256 (hex) of ``layers``
    layers: Mapped[str] = mapped_column(Text)  # JSON list of layer names, in block row order

    __table_args__ = (
        UniqueConstraint(
            "run_id", "family", "digest", name="uq_histogram_layouts_run_family_digest"
        ),
    )


class HistogramBlockRow(Base):
    """Histograms of one family's layers (``grad_hist/<layer>``) over one batch's steps: one row
    instead of one per (layer, step). ``lo``, ``hi`` and ``nonfinite`` are row-major (layer,
    step) float64; ``counts`` row-major (layer, step, bin) float64, so one layer's histograms are
    one contiguous slice of each column, read with ``substr``.

    A (name, step) stored here and as a ``histograms`` row: the row is the later write (storing
    a block deletes the rows it covers); of two blocks, the later ``(seq, id)``.
    """

    __tablename__ = "histogram_blocks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    layout_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("histogram_layouts.id", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(BigInteger)  # the ingest sequence of its batch
    step_min: Mapped[int] = mapped_column(BigInteger)
    step_max: Mapped[int] = mapped_column(BigInteger)
    steps_count: Mapped[int] = mapped_column(Integer)
    bins: Mapped[int] = mapped_column(Integer)
    steps: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian int64
    times: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian float64, Unix seconds
    lo: Mapped[bytes] = mapped_column(LargeBinary)
    hi: Mapped[bytes] = mapped_column(LargeBinary)
    nonfinite: Mapped[bytes] = mapped_column(LargeBinary)
    counts: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (
        Index("ix_histogram_blocks_run_layout_step", "run_id", "layout_id", "step_min"),
    )


class TokenRow(Base):
    """An access token: only the SHA-256 of its secret is stored (the secret is shown once)."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    scope: Mapped[str] = mapped_column(String(16))  # "read" or "write" (write implies read)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)
