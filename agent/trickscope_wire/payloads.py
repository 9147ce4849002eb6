"""Payloads that cross the wire, as frozen standard-library dataclasses.

Every write is idempotent: runs are created with a client-chosen id (``PUT``), point batches carry
a client-chosen ``batch_id`` and points are keyed by (run, series, step). That is what makes
retries and journal replays safe.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

WIRE_VERSION = 1
"""Bumped on any incompatible change; the server rejects versions it does not speak."""

BLOCKS_WIRE_VERSION = 2
"""The version a ``PointBatch`` carrying ``blocks`` declares, so that a server that predates
blocks refuses the batch (the agent keeps it) rather than store it without them."""

HISTOGRAM_BLOCKS_WIRE_VERSION = 3
"""The version a ``PointBatch`` carrying ``histogram_blocks`` declares (blocks allowed too), so
that a server that predates them refuses the batch (the agent keeps it) rather than store it
without its histograms."""

MATRIX_BLOCKS_WIRE_VERSION = 4
"""The version a ``PointBatch`` declares when a :class:`StatBlock`'s values are one column of
every layer's values (histogram blocks allowed too), so that a server that takes only a column
per layer refuses the batch (the agent keeps it) rather than misread it."""

RUN_STATUSES = ("running", "finished", "failed", "crashed")
FINAL_STATUSES = ("finished", "failed", "crashed")


@dataclass(frozen=True)
class RunCreate:
    """``PUT /api/v1/runs/{run_id}``: create a run, or update its metadata (idempotent)."""

    project: str
    name: str
    config: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    system: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None  # Unix seconds, stamped by the agent
    wire_version: int = WIRE_VERSION


@dataclass(frozen=True)
class SeriesColumns:
    """Points of one series: three packed columns of equal length (see ``columns``)."""

    name: str
    steps: str  # encode_i64
    values: str  # encode_f64: NaN and ±Inf carried exactly
    times: str  # encode_f64: Unix seconds when the value was produced on the training thread


@dataclass(frozen=True)
class HistogramColumns:
    """Histograms of one tensor family (e.g. ``grad_hist/<param>``) at several steps.

    Each step has ``bins`` equal-width bins over ``[lo, hi]`` (finite values only; the
    non-finite count is kept apart so NaN and ±Inf are never silently binned).
    """

    name: str
    bins: int
    steps: str  # encode_i64, one per histogram
    lo: str  # encode_f64, lower edge per histogram
    hi: str  # encode_f64, upper edge per histogram
    counts: str  # encode_f64, len(steps) * bins counts, row-major (histogram, bin)
    nonfinite: str  # encode_f64, NaN/±Inf element count per histogram
    times: str  # encode_f64, Unix seconds per histogram


@dataclass(frozen=True)
class StatBlock:
    """One statistic of many layers over the same steps: series ``family/<layer>`` for each of
    ``layers``, sent as one block instead of one ``SeriesColumns`` each.

    ``values`` is one ``encode_f64`` column of ``len(layers) * len(steps)`` values, row-major
    (layer, step), declared with ``MATRIX_BLOCKS_WIRE_VERSION``; or, as wire versions 2 and 3
    send it, a list holding layer ``i``'s column (one value per step) at ``i``.
    """

    family: str  # the statistic, without "/"
    layers: list[str]
    steps: str  # encode_i64, shared by every layer
    times: str  # encode_f64, shared by every layer
    values: str | list[str]


@dataclass(frozen=True)
class HistogramBlock:
    """Histograms of many layers over the same steps: ``family/<layer>`` for each of ``layers``,
    all with ``bins`` bins, sent as one block instead of one ``HistogramColumns`` each.

    ``lo``, ``hi`` and ``nonfinite`` hold one value per (layer, step), row-major; ``counts``
    holds ``bins`` per (layer, step), row-major (layer, step, bin).
    """

    family: str  # e.g. "grad_hist", without "/"
    layers: list[str]
    bins: int
    steps: str  # encode_i64, shared by every layer
    times: str  # encode_f64, shared by every layer
    lo: str  # encode_f64, len(layers) * len(steps)
    hi: str  # encode_f64, len(layers) * len(steps)
    nonfinite: str  # encode_f64, len(layers) * len(steps)
    counts: str  # encode_f64, len(layers) * len(steps) * bins


@dataclass(frozen=True)
class PointBatch:
    """``POST /api/v1/runs/{run_id}/points``: one transaction on the server."""

    batch_id: str
    series: list[SeriesColumns]
    histograms: list[HistogramColumns] = field(default_factory=list)
    # BLOCKS_WIRE_VERSION when ``blocks`` is not empty (MATRIX_BLOCKS_WIRE_VERSION when their
    # values are one column each), HISTOGRAM_BLOCKS_WIRE_VERSION when ``histogram_blocks`` is
    # not empty.
    wire_version: int = WIRE_VERSION
    blocks: list[StatBlock] = field(default_factory=list)
    histogram_blocks: list[HistogramBlock] = field(default_factory=list)


@dataclass(frozen=True)
class LayersDeclare:
    """``PUT /api/v1/runs/{run_id}/layers``: parameter names in model order (for heatmaps)."""

    layers: list[str]
    wire_version: int = WIRE_VERSION


@dataclass(frozen=True)
class RankDeclare:
    """``PUT /api/v1/runs/{run_id}/ranks/{rank}``: one rank of a distributed job, its host and
    process (rank 0's ``system`` describes the job as a whole)."""

    system: dict[str, Any]
    wire_version: int = WIRE_VERSION


@dataclass(frozen=True)
class SetupDeclare:
    """``PUT /api/v1/runs/{run_id}/setup``: what ``watch`` saw of the training setup (replaces).

    The optimizer and its param groups, each parameter's shape, module type and kind, the
    DropPath modules, the AMP scaler, the LR scheduler, the EMA model and the planned run length;
    the layout is documented in ``docs/diagnosis.md``. The health rules read it, so they run
    without the user typing config keys.
    """

    setup: dict[str, Any]
    wire_version: int = WIRE_VERSION


@dataclass(frozen=True)
class AgentFinding:
    """A health finding made inside the training process, in the server's finding form.

    Some checks need inputs that exist only there (the weights of one exact step, say); they reach
    ``/health`` as findings of the same form as the server's own. ``evidence`` holds the numbers
    (JSON values; non-finite floats as ``"NaN"``/``"Infinity"``/``"-Infinity"``).
    """

    check: str
    severity: str  # "error" | "warning" | "info"
    title: str
    why: str
    remedy: str
    step: int | None = None
    layer: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FindingsDeclare:
    """``PUT /api/v1/runs/{run_id}/findings``: agent findings, merged by ``(check, layer)`` (a
    re-sent finding replaces the one with the same key)."""

    findings: list[AgentFinding]
    wire_version: int = WIRE_VERSION


@dataclass(frozen=True)
class RunFinish:
    """``POST /api/v1/runs/{run_id}/finish``: the run's final status."""

    status: str = "finished"
    ended_at: float | None = None
    wire_version: int = WIRE_VERSION


def dumps(payload: Any) -> bytes:
    """Serialise a payload dataclass to compact UTF-8 JSON (strictly valid: no NaN literals)."""
    return json.dumps(_plain(payload), separators=(",", ":"), allow_nan=False, default=str).encode()


def _plain(value: Any) -> Any:
    # ``dataclasses.asdict`` deep-copies every leaf: on a batch of thousands of series that
    # costs more than the JSON encoding. Payload fields are JSON values already; the leaves
    # (most values: four strings per series) return first.
    if value is None or isinstance(value, (str, int, float)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value
