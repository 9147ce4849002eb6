"""Histogram blocks: one row per (run, histogram family, batch) holding every layer's histograms
of the batch's steps, with the layers listed once per run in ``histogram_layouts``.

A flush of ``watch``'s histograms is 2 families x ~150 layers: as rows of one histogram each that
was ~300 rows and index entries per flush; as blocks it is two rows. Reads slice one layer's
part of each column in SQL (``substr``), so they fetch that layer's bytes, not the block's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, delete, exists, func, insert, literal, select
from sqlalchemy.orm import Session

from trickscope_server.storage.models import HistogramBlockRow, HistogramLayoutRow, HistogramRow
from trickscope_server.storage.runs import IN_CHUNK

_blocks = cast(Table, HistogramBlockRow.__table__)
_b = _blocks.c
_l = cast(Table, HistogramLayoutRow.__table__).c
_h = cast(Table, HistogramRow.__table__).c

# Built once: a statistics flush stores its histogram blocks every few seconds, and building
# (and cache-keying) these expressions per call cost more than running them.
_INSERT_BLOCKS = insert(_blocks)
_FIND_LAYOUT = select(_l.id).where(
    _l.run_id == bindparam("b_run"),
    _l.family == bindparam("b_family"),
    _l.digest == bindparam("b_digest"),
)
_HAS_PER_NAME_ROWS = select(exists().where(_h.run_id == bindparam("b_run")))


@dataclass(frozen=True)
class NewBlock:
    """One histogram block to store: a family's layers over shared steps, raw little-endian
    columns as :class:`~trickscope_server.storage.models.HistogramBlockRow` holds them."""

    family: str
    layers: tuple[str, ...]
    bins: int
    steps: list[int]
    steps_raw: bytes
    times: bytes
    lo: bytes
    hi: bytes
    nonfinite: bytes
    counts: bytes


def insert_blocks(session: Session, *, run_id: str, seq: int, blocks: Sequence[NewBlock]) -> None:
    """Store a batch's histogram blocks; the ``histograms`` rows they cover are deleted (the
    blocks are the later write)."""
    if not blocks:
        return
    rows = [
        {
            "run_id": run_id,
            "layout_id": _layout_id(session, run_id, block.family, block.layers),
            "seq": seq,
            "step_min": min(block.steps),
            "step_max": max(block.steps),
            "steps_count": len(block.steps),
            "bins": block.bins,
            "steps": block.steps_raw,
            "times": block.times,
            "lo": block.lo,
            "hi": block.hi,
            "nonfinite": block.nonfinite,
            "counts": block.counts,
        }
        for block in blocks
        if block.steps
    ]
    connection = session.connection()
    if rows:
        connection.execute(_INSERT_BLOCKS, rows)
    # Most runs have no per-name rows at all: one index probe says so.
    if connection.execute(_HAS_PER_NAME_ROWS, {"b_run": run_id}).scalar():
        for block in blocks:
            names = [f"{block.family}/{layer}" for layer in block.layers]
            for start in range(0, len(names) if block.steps else 0, IN_CHUNK):
                session.execute(
                    delete(HistogramRow).where(
                        _h.run_id == run_id,
                        _h.name.in_(names[start : start + IN_CHUNK]),
                        _h.step.in_(sorted(set(block.steps))),
                    )
                )


def _layout_id(session: Session, run_id: str, family: str, layers: tuple[str, ...]) -> int:
    """The id of the run's layout of ``family`` with these layers, stored on first use."""
    text = json.dumps(list(layers), ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()
    key = {"b_run": run_id, "b_family": family, "b_digest": digest}
    connection = session.connection()
    found = connection.execute(_FIND_LAYOUT, key).scalar()
    if found is None:
        # The run's row lock (taken first by every batch) serialises two workers here.
        session.execute(
            insert(HistogramLayoutRow).values(
                run_id=run_id, family=family, digest=digest, layers=text
            )
        )
        found = connection.execute(_FIND_LAYOUT, key).scalar_one()
    return int(found)


def layouts(
    session: Session, *, run_id: str, family: str | None = None
) -> list[tuple[int, str, list[str]]]:
    """(id, family, layers) of the run's histogram layouts (of ``family`` only, if given)."""
    stmt = select(_l.id, _l.family, _l.layers).where(_l.run_id == run_id)
    if family is not None:
        stmt = stmt.where(_l.family == family)
    return [(int(i), str(f), json.loads(t)) for i, f, t in session.execute(stmt.order_by(_l.id))]


def layer_rows(session: Session, *, run_id: str, name: str) -> dict[int, int]:
    """{layout id: the layer's row in it} of the layouts that hold histogram ``name``."""
    family, sep, layer = name.partition("/")
    if not (sep and family and layer):
        return {}
    out = {}
    for layout_id, _, layer_names in layouts(session, run_id=run_id, family=family):
        if layer in layer_names:
            out[layout_id] = layer_names.index(layer)
    return out


def block_steps(session: Session, *, run_id: str, layout_ids: Iterable[int]) -> list[bytes]:
    """The packed steps column of each block of these layouts."""
    ids = list(layout_ids)
    if not ids:
        return []
    stmt = select(_b.steps).where(_b.run_id == run_id, _b.layout_id.in_(ids))
    return [bytes(s) for s in session.execute(stmt).scalars()]


@dataclass(frozen=True)
class LayerSlice:
    """One layer's histograms out of one block: ``steps_count`` of each, ``bins`` bins each."""

    seq: int
    id: int
    bins: int
    steps: bytes
    lo: bytes
    hi: bytes
    nonfinite: bytes
    counts: bytes


def layer_slices(
    session: Session, *, run_id: str, rows: dict[int, int], low: int, high: int
) -> list[LayerSlice]:
    """Each block (of the layouts in ``rows``, with steps in [low, high]) cut to its layer's row
    of every column, in write order."""
    out: list[LayerSlice] = []
    for layout_id, row in rows.items():
        # 1-based byte offsets: the layer's row of a (layer, step) column, and of (layer, step,
        # bin) counts.
        per_step = _b.steps_count * 8
        per_layer_counts = _b.steps_count * _b.bins * 8
        stmt = select(
            _b.seq,
            _b.id,
            _b.bins,
            _b.steps,
            func.substr(_b.lo, literal(row) * per_step + 1, per_step),
            func.substr(_b.hi, literal(row) * per_step + 1, per_step),
            func.substr(_b.nonfinite, literal(row) * per_step + 1, per_step),
            func.substr(_b.counts, literal(row) * per_layer_counts + 1, per_layer_counts),
        ).where(
            _b.run_id == bindparam("b_run"),
            _b.layout_id == layout_id,
            _b.step_max >= low,
            _b.step_min <= high,
        )
        for seq, bid, bins, steps, lo, hi, nonfinite, counts in session.execute(
            stmt, {"b_run": run_id}
        ):
            out.append(
                LayerSlice(
                    int(seq),
                    int(bid),
                    int(bins),
                    bytes(steps),
                    bytes(lo),
                    bytes(hi),
                    bytes(nonfinite),
                    bytes(counts),
                )
            )
    out.sort(key=lambda s: (s.seq, s.id))
    return out
