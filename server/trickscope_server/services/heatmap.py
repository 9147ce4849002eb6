"""The heatmap: one statistic over every layer of a run, on a common step grid."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trickscope_server.downsample import dedupe_latest
from trickscope_server.errors import InvalidPayloadError
from trickscope_server.services._convert import F64, I64, check_budget
from trickscope_server.services.runs import require_run
from trickscope_server.storage import Database, Session
from trickscope_server.storage import blocks as block_store
from trickscope_server.storage import chunks as chunk_store
from trickscope_wire import finite_or_token

# Aggregates that share a per-layer statistic's prefix but are not layers (grad_norm/total, and
# the same norm measured before clipping).
_NOT_LAYERS = frozenset({"total", "total_preclip"})


def _bucket_extremes(
    buckets: NDArray[np.intp], values: NDArray[np.float64]
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    # Per bucket, the value of largest magnitude (non-finite first): a spike must survive.
    magnitude = np.where(np.isfinite(values), np.abs(values), np.inf)
    order = np.lexsort((magnitude, buckets))
    sorted_buckets = buckets[order]
    last = np.flatnonzero(np.append(sorted_buckets[1:] != sorted_buckets[:-1], True))
    return sorted_buckets[last], values[order][last]


def _json_row(values: NDArray[np.float64], present: NDArray[np.bool_]) -> list[Any]:
    row: list[Any] = values.tolist()
    for i in np.flatnonzero(~present).tolist():
        row[i] = None
    for i in np.flatnonzero(present & ~np.isfinite(values)).tolist():
        row[i] = finite_or_token(row[i])
    return row


@dataclass
class LayerGrid:
    """One statistic over layers (model order) on a common step grid, as arrays."""

    layers: list[str]
    steps: NDArray[np.int64]
    cells: NDArray[np.float64]  # (layers, steps)
    filled: NDArray[np.bool_]  # (layers, steps): False where a layer has no point
    downsampled: bool

    @cached_property
    def rows(self) -> dict[str, int]:
        """{layer: its row}."""
        return {layer: i for i, layer in enumerate(self.layers)}


def load_layer_grid(
    session: Session, *, run_id: str, stat: str, declared: list[str], points: int
) -> LayerGrid:
    """Every ``<stat>/<layer>`` series of a run in one query, bucketed to ``points`` steps.

    A bucket keeps the value of largest magnitude (non-finite first), so a spike survives.
    ``stat`` may hold a ``/`` (``opt/eps_dominance``): its blocks are those of the family named
    by its first part, as ingest stores them.
    """
    prefix = stat + "/"
    aggregates = _NOT_LAYERS - set(declared)  # a model may name a parameter "total"
    # Per layer, its pieces in ingest order: (sequence, id, steps, values).
    parts: dict[str, list[tuple[int, int, Any, Any]]] = defaultdict(list)
    for name, steps_raw, values_raw, seq, chunk_id in chunk_store.prefixed_chunks(
        session, run_id=run_id, prefix=prefix
    ):
        layer = name[len(prefix) :]
        if layer not in aggregates:
            parts[layer].append(
                (seq, chunk_id, np.frombuffer(steps_raw, I64), np.frombuffer(values_raw, F64))
            )
    family = stat.partition("/")[0]
    blocks = block_store.family_blocks(session, run_id=run_id, family=family)
    if blocks:
        names = block_store.names_of_family(session, run_id=run_id, family=family)
        layers = {
            sid: name[len(prefix) :] for sid, name in names.items() if name.startswith(prefix)
        }
        for block in blocks:
            for row, sid in enumerate(block.members.tolist()):
                layer = layers.get(sid)
                if layer is not None and layer not in aggregates:
                    parts[layer].append((block.seq, -block.id, block.steps, block.values[row]))
    present = set(parts)
    order = [layer for layer in declared if layer in present]
    order += sorted(present - set(order))
    columns = {}
    for layer in order:
        pieces = sorted(parts[layer], key=lambda p: (p[0], p[1]))
        columns[layer] = dedupe_latest(
            np.concatenate([p[2] for p in pieces]), np.concatenate([p[3] for p in pieces])
        )
    grid = (
        np.unique(np.concatenate([c[0] for c in columns.values()])) if columns else np.empty(0, I64)
    )
    downsampled = grid.size > points
    if downsampled:
        # Equal-count buckets over the union of steps; each labelled by its first step.
        bucket_of = (np.arange(grid.size) * points) // grid.size
        starts = np.flatnonzero(np.append(True, bucket_of[1:] != bucket_of[:-1]))
        grid = grid[starts]
    cells = np.zeros((len(order), grid.size), F64)
    filled = np.zeros((len(order), grid.size), np.bool_)
    for row, layer in enumerate(order):
        steps, values = columns[layer][0], columns[layer][1]
        positions = np.searchsorted(grid, steps, "right" if downsampled else "left")
        if downsampled:
            buckets, extremes = _bucket_extremes(positions - 1, values)
            cells[row, buckets] = extremes
            filled[row, buckets] = True
        else:
            cells[row, positions] = values
            filled[row, positions] = True
    return LayerGrid(order, grid, cells, filled, downsampled)


def read_heatmap(
    db: Database, *, run_id: str, stat: str, points: int, max_points: int
) -> dict[str, Any]:
    """``Heatmap`` of ``<stat>/<layer>`` series over a common step grid, in one query."""
    check_budget(points, max_points=max_points)
    if not stat or "/" in stat:
        raise InvalidPayloadError(
            f"stat must be a statistic name without '/', e.g. grad_norm; got {stat!r:.80}",
            errors=[{"loc": ["query", "stat"], "msg": "must be a name without '/'"}],
        )
    with db.reader() as session:
        run = require_run(session, run_id)
        grid = load_layer_grid(
            session, run_id=run_id, stat=stat, declared=list(run.layers), points=points
        )
    return {
        "stat": stat,
        "layers": grid.layers,
        "step": grid.steps.tolist(),
        "z": [
            _json_row(cells, filled) for cells, filled in zip(grid.cells, grid.filled, strict=True)
        ],
        "downsampled": grid.downsampled,
    }
