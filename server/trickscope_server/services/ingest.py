"""Point ingest: body decoding and validation, then one transaction per batch.

The body is parsed here with orjson rather than by the web framework: validating a million-point
body through pydantic costs more than storing it. Columns are decoded with one ``frombuffer`` each
and stored as the very bytes that arrived, so there is no per-point Python work.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from trickscope_server.errors import (
    InvalidPayloadError,
    PayloadTooLargeError,
    RunNotFoundError,
    UnsupportedEncodingError,
)
from trickscope_server.services._convert import F64, I64
from trickscope_server.services._payload import STORABLE_NAMES
from trickscope_server.services._payload import checked_name as _name
from trickscope_server.services._payload import column as _column
from trickscope_server.services._payload import fail as _fail
from trickscope_server.services.batch_summaries import batch_summaries
from trickscope_server.services.ingest_blocks import (
    DecodedBlock,
    block_row,
    increasing_steps,
    merge_blocks,
    parse_blocks,
    sub_block,
)
from trickscope_server.services.ingest_histograms import (
    DecodedHistogramBlock,
    DecodedHistograms,
    histogram_rows,
    parse_histogram_blocks,
    parse_histograms,
)
from trickscope_server.services.runs import check_wire_version
from trickscope_server.services.summaries import overlapping, resummarise
from trickscope_server.storage import Database
from trickscope_server.storage import block_summaries as block_store
from trickscope_server.storage import blocks as blocks_store
from trickscope_server.storage import histogram_blocks as histogram_block_store
from trickscope_server.storage import histograms as histogram_store
from trickscope_server.storage import points as store
from trickscope_server.storage import summaries as summary_store
from trickscope_server.storage.ingest_state import RunState
from trickscope_server.storage.transaction import WriteTransaction
from trickscope_wire import (
    BLOCKS_WIRE_VERSION,
    HISTOGRAM_BLOCKS_WIRE_VERSION,
    MATRIX_BLOCKS_WIRE_VERSION,
    WIRE_VERSION,
)

_MAX_BATCH_ID = 128
_MAX_NAME = 512
# A point batch may use any version of the points wire (blocks came with 2, histogram blocks
# with 3, a block's values as one column with 4); other payloads speak WIRE_VERSION.
_POINTS_WIRE_VERSIONS = frozenset(
    {WIRE_VERSION, BLOCKS_WIRE_VERSION, HISTOGRAM_BLOCKS_WIRE_VERSION, MATRIX_BLOCKS_WIRE_VERSION}
)

# A series with this many chunks stored since its last compaction gets compacted after the batch
# that crossed the bound is acknowledged (the agent flushes logged points every 0.5 s: ~30 s of
# small chunks).
COMPACT_AFTER_CHUNKS = 64


@dataclass(slots=True)
class DecodedSeries:
    """One series of a batch: raw little-endian bytes plus their array views.

    Not frozen: a wide batch builds thousands of these, and a frozen dataclass' ``__init__``
    costs three times as much. Nothing changes one after :func:`parse_batch`.
    """

    name: str
    steps_raw: bytes
    values_raw: bytes
    times_raw: bytes
    steps: NDArray[np.int64]
    values: NDArray[np.float64]


@dataclass(frozen=True)
class DecodedBatch:
    """A validated point batch."""

    batch_id: str
    series: list[DecodedSeries]
    points: int
    histograms: list[DecodedHistograms] = dataclasses.field(default_factory=list)
    blocks: list[DecodedBlock] = dataclasses.field(default_factory=list)
    histogram_blocks: list[DecodedHistogramBlock] = dataclasses.field(default_factory=list)


@dataclass(frozen=True)
class IngestOutcome:
    """What a stored batch did: points accepted, duplicate or not, series due for compaction,
    and whether someone follows the run live (the agent's cue to send at its fast cadence)."""

    accepted: int
    duplicate: bool
    compact: list[int]
    followed: bool = False


def decompress(body: bytes, *, encoding: str | None, max_bytes: int) -> bytes:
    """The body after ``Content-Encoding`` (identity or gzip), never larger than ``max_bytes``."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise UnsupportedEncodingError(
            f"Content-Encoding {encoding!r} is not supported: send identity or gzip"
        )
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        # max_length caps the output, so a small "zip bomb" cannot exhaust memory.
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise InvalidPayloadError(f"body is not valid gzip: {exc}") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise PayloadTooLargeError(
            f"decompressed body is larger than the server's limit of {max_bytes} bytes "
            "(TRICKSCOPE_MAX_BODY_BYTES): send smaller batches"
        )
    if not inflater.eof:
        raise InvalidPayloadError("body is truncated gzip")
    return out


def _shared_column(
    shared: dict[str, tuple[bytes, NDArray[np.int64]]], text: Any, loc: list[str | int], name: str
) -> tuple[bytes, NDArray[np.int64]]:
    """A column that many series of a batch may repeat: decoded once per distinct text."""
    if isinstance(text, str) and (known := shared.get(text)) is not None:
        return known
    raw = _column(text, loc, name)
    known = shared[text] = (raw, np.frombuffer(raw, dtype=I64))
    return known


def parse_batch(body: bytes, *, max_points: int, max_name: int = _MAX_NAME) -> DecodedBatch:
    """Validate a ``PointBatch`` JSON body and decode its columns."""
    try:
        # orjson refuses NaN literals and lone surrogates (strict JSON): a 422 like any other.
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _fail(["body"], f"is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _fail(["body"], f"must be a JSON object, got {type(data).__name__}")
    version = data.get("wire_version", 1)
    if not (type(version) is int and version in _POINTS_WIRE_VERSIONS):
        check_wire_version(version)
    batch_id = _name(data.get("batch_id"), ["body", "batch_id"], _MAX_BATCH_ID)
    raw_series = data.get("series")
    if not isinstance(raw_series, list):
        raise _fail(["body", "series"], "must be a list of series columns")
    decoded: list[DecodedSeries] = []
    points = 0
    # The agent sends per-layer statistics as many series sharing one steps and one times
    # column (same text): each distinct text is decoded once.
    shared: dict[str, tuple[bytes, NDArray[np.int64]]] = {}
    for i, item in enumerate(raw_series):
        # Error locations are built only on failure: a wide batch has thousands of series.
        if not isinstance(item, dict):
            raise _fail(["body", "series", i], f"must be an object, got {type(item).__name__}")
        name = item.get("name")
        if not (type(name) is str and name in STORABLE_NAMES and len(name) <= max_name):
            name = _name(name, ["body", "series", i, "name"], max_name)
        text = item.get("steps")
        known = shared.get(text) if type(text) is str else None
        if known is None:
            known = _shared_column(shared, text, ["body", "series", i, "steps"], name)
        steps, step_array = known
        values = _column(item.get("values"), ["body", "series", i, "values"], name)
        text = item.get("times")
        known = shared.get(text) if type(text) is str else None
        if known is None:
            known = _shared_column(shared, text, ["body", "series", i, "times"], name)
        times = known[0]
        if not len(steps) == len(values) == len(times):
            raise _fail(
                ["body", "series", i],
                f"series {name!r}: columns differ in length (steps {len(steps) // 8}, "
                f"values {len(values) // 8}, times {len(times) // 8})",
            )
        points += len(steps) // 8
        if points > max_points:
            raise PayloadTooLargeError(
                f"batch holds more than the server's limit of {max_points} points "
                "(TRICKSCOPE_MAX_BATCH_POINTS): send smaller batches"
            )
        decoded.append(
            DecodedSeries(
                name=name,
                steps_raw=steps,
                values_raw=values,
                times_raw=times,
                steps=step_array,
                values=np.frombuffer(values, dtype=F64),
            )
        )
    blocks, points = parse_blocks(
        data.get("blocks", []), points=points, max_points=max_points, max_name=max_name
    )
    histograms = parse_histograms(
        data.get("histograms", []), points=points, max_points=max_points, max_name=max_name
    )
    histogram_blocks = parse_histogram_blocks(
        data.get("histogram_blocks", []),
        points=points + sum(h.counts.size for h in histograms),
        max_points=max_points,
        max_name=max_name,
    )
    return DecodedBatch(
        batch_id=batch_id,
        series=decoded,
        points=points,
        histograms=histograms,
        blocks=blocks,
        histogram_blocks=histogram_blocks,
    )


def ingest_batch(db: Database, *, run_id: str, batch: DecodedBatch) -> IngestOutcome:
    """Store a batch in one transaction, acknowledged only after the commit.

    A batch id the run has already seen changes nothing, which makes agent retries and journal
    replays safe. The outcome names the series due for compaction (see ``services/compact.py``).
    """
    now = time.time()
    try:
        return _store_batch(db, run_id=run_id, batch=batch, now=now)
    except _Duplicate as duplicate:
        return IngestOutcome(0, True, [], duplicate.followed)


class _Duplicate(Exception):
    """Raised inside the transaction to roll it back: the batch was stored before."""

    def __init__(self, followed: bool) -> None:
        super().__init__()
        self.followed = followed


def _split_blocks(
    batch: DecodedBatch, layers: frozenset[str]
) -> tuple[list[DecodedSeries], list[DecodedBlock]]:
    """The batch's series and the blocks stored as blocks.

    Only a run's per-layer statistics are stored as blocks: members named
    ``<statistic>/<declared layer>``, or ``<statistic>/<measure>/<declared layer>`` (the
    optimizer's ``opt/eps_dominance/<layer>``). Other members (``train/loss`` logged with
    ``run.log``, ``grad_norm/total``) join the series and keep their summaries in their rows,
    where the runs table sorts and filters by a metric's last value. A block that cannot be
    stored as one (a step repeated, a member also named elsewhere in the batch) joins the series
    whole.
    """
    if not batch.blocks:
        return batch.series, []
    twice = _named_twice(batch)
    increasing: dict[bytes, bool] = {}  # a flush's blocks share their steps
    series, blocks = list(batch.series), []
    for block in batch.blocks:
        storable = increasing.get(block.steps_raw)
        if storable is None:
            storable = increasing[block.steps_raw] = increasing_steps(block.steps)
        if not storable or not block.names or (twice and not twice.isdisjoint(block.names)):
            series.extend(_as_series(block, range(len(block.names))))
            continue
        if not layers.issuperset(block.layout[1]):
            keep, others = _layer_rows(block.layout, layers)
            if others:  # else every member is a measure of a layer: the block as it is
                series.extend(_as_series(block, others))
                block = sub_block(block, keep) if keep else None
        if block is not None:
            blocks.append(block)
    return series, blocks


def _named_twice(batch: DecodedBatch) -> set[str]:
    """The names the batch holds more than once. A block member's name starts with its
    statistic, so only a statistic sent in two blocks, or a member also sent as a series, needs
    the names counted: rare (``grad_norm/total`` rides beside the ``grad_norm`` block, but is
    not one of its members)."""
    by_family: dict[str, DecodedBlock] = {}
    clash = False
    for block in batch.blocks:
        clash = clash or by_family.setdefault(block.family, block) is not block
    for s in batch.series:
        family, _, member = s.name.partition("/")
        block = by_family.get(family)
        clash = clash or (block is not None and member in block.layout[1])
    if not clash:
        return set()
    counts: dict[str, int] = {}
    for name in [s.name for s in batch.series] + [n for b in batch.blocks for n in b.names]:
        counts[name] = counts.get(name, 0) + 1
    return {name for name, count in counts.items() if count > 1}


# The rows of a block layout that are a run's layers or measures of one (kept in the block) and
# the others, by (layout, layers): a run sends the same layouts in every flush. Cleared when full.
_LAYER_ROWS: dict[tuple[Hashable, frozenset[str]], tuple[list[int], list[int]]] = {}
_LAYER_ROWS_MAX = 256


def _layer_rows(
    layout: tuple[str, tuple[str, ...]], layers: frozenset[str]
) -> tuple[list[int], list[int]]:
    """The rows of ``layout``'s members that name a layer (or a measure of one), and the
    others."""
    key = (layout, layers)
    known = _LAYER_ROWS.get(key)
    if known is None:
        of_a_layer = [_of_a_layer(member, layers) for member in layout[1]]
        known = (
            [i for i, yes in enumerate(of_a_layer) if yes],
            [i for i, yes in enumerate(of_a_layer) if not yes],
        )
        if len(_LAYER_ROWS) >= _LAYER_ROWS_MAX:
            _LAYER_ROWS.clear()
        _LAYER_ROWS[key] = known
    return known


def _of_a_layer(member: str, layers: frozenset[str]) -> bool:
    """Whether a block member (the name after its statistic) is a declared layer, or a
    measure of one (``eps_dominance/<layer>``)."""
    if member in layers:
        return True
    measure, sep, layer = member.partition("/")
    return bool(measure and sep) and layer in layers


def _as_series(block: DecodedBlock, rows: Sequence[int]) -> list[DecodedSeries]:
    """These rows of a block as series of their own."""
    width = block.steps.size * 8
    out = []
    for row in rows:
        raw = block.values_raw[row * width : (row + 1) * width]
        out.append(
            DecodedSeries(
                name=block.names[row],
                steps_raw=block.steps_raw,
                values_raw=raw,
                times_raw=block.times_raw,
                steps=block.steps,
                values=np.frombuffer(raw, dtype=F64),
            )
        )
    return out


def _note_rows(
    families: block_store.RunSummaries,
    summaries: list[dict[str, Any]],
    series: list[DecodedSeries],
) -> None:
    """Tell the block summaries which of their series got points in their own rows."""
    if not families.records.size:
        return
    lasts: dict[int, int] = {}
    for row, s in zip(summaries, series, strict=True):
        if block_store.family_of(s.name) is not None:
            lasts[row["b_id"]] = max(row["b_last"], lasts.get(row["b_id"], row["b_last"]))
    if lasts:
        families.rows_written(lasts)


def _store_batch(db: Database, *, run_id: str, batch: DecodedBatch, now: float) -> IngestOutcome:
    with db.write() as tx:
        started = store.start_batch(
            tx,
            run_id=run_id,
            batch_id=batch.batch_id,
            points=batch.points,
            now=now,
            layers=bool(batch.blocks),
        )
        if started is None:
            raise RunNotFoundError(
                f"run {run_id!r} does not exist: create it with PUT /api/v1/runs/{run_id} first"
            )
        followed = started.followed(now)
        if not started.fresh:
            raise _Duplicate(followed)  # roll back the sequence number taken: nothing changes
        seq, created_at = started.seq, started.created_at
        # What this process knows of the run since its previous batch (storage/ingest_state.py).
        state = db.run_states.take(run_id, created_at, seq)
        layers = frozenset(started.layers)
        series, blocks = _split_blocks(batch, layers)
        nonempty = [s for s in series if s.steps.size]
        cached = [db.series_ids.members(run_id, created_at, b.layout) for b in blocks]
        ids = store.ensure_series(
            tx,
            run_id=run_id,
            names=[s.name for s in nonempty]
            + [n for b, m in zip(blocks, cached, strict=True) if m is None for n in b.names],
            cache=(db.series_ids, created_at),
        )
        members = [
            np.array([ids[n] for n in b.names], dtype=np.int64) if m is None else m
            for b, m in zip(blocks, cached, strict=True)
        ]
        series_ids = [ids[s.name] for s in nonempty]
        _know_rows(tx, run_id, state, series_ids)
        # No series of the batch can have points from blocks unless it belongs to a family.
        with_family = bool(blocks) or any(block_store.family_of(s.name) for s in nonempty)
        families = _families(tx, run_id, state, with_family)
        chunks, summaries = batch_summaries(nonempty, ids, run_id, seq)
        # Read before the merge: which series get a step logged again (their summaries are
        # recounted from the points once this batch's points are in).
        recount = overlapping(
            tx,
            run_id=run_id,
            steps=[s.steps for s in nonempty],
            series_ids=series_ids,
            families=families,
            row_last=state.row_last,
        )
        _note_rows(families, summaries, nonempty)
        if blocks:
            recount += sorted(merge_blocks(tx, blocks, members, families))
            rows = [block_row(b, run_id, seq, m) for b, m in zip(blocks, members, strict=True)]
            blocks_store.insert_blocks(tx, rows)
        summary_store.store_series(tx, chunks, summaries)
        _rows_merged(state, summaries)
        if recount:
            names = {sid: name for name, sid in ids.items()}
            for block, block_ids in zip(blocks, members, strict=True):
                names.update(zip(block_ids.tolist(), block.names, strict=True))
            state.row_last.update(
                resummarise(
                    tx.session,
                    run_id=run_id,
                    series={sid: names[sid] for sid in recount},
                    families=families,
                )
            )
        if families.dirty:
            block_store.save(tx, families)
        if batch.histograms:
            histogram_store.upsert_histograms(tx.session, histogram_rows(run_id, batch))
        if batch.histogram_blocks:
            stored = [b.stored() for b in batch.histogram_blocks]
            histogram_block_store.insert_blocks(tx.session, run_id=run_id, seq=seq, blocks=stored)
        due = _series_due(state, series_ids)
        if blocks:
            due += _family_members_due(tx, run_id, state, blocks)
    if families.records is not _NO_RECORDS:
        state.records, state.records_stored = families.records, families.stored
    db.run_states.save(run_id, created_at, seq, state)  # committed: true of the run at seq
    db.series_ids.add(run_id, created_at, ids)  # committed: safe to reuse
    for block, block_ids, known in zip(blocks, members, cached, strict=True):
        if known is None:
            db.series_ids.add_members(run_id, created_at, block.layout, block_ids)
    return IngestOutcome(batch.points, False, list(dict.fromkeys(due)), followed)


# Stands for "the run's block summaries were not read" (no series of the batch can have any).
_NO_RECORDS = np.zeros(0, dtype=block_store.RECORD)


def _know_rows(tx: WriteTransaction, run_id: str, state: RunState, series_ids: list[int]) -> None:
    """Read the row state (last step, chunks pending) of the series the state lacks."""
    unknown = [sid for sid in dict.fromkeys(series_ids) if sid not in state.row_last]
    if not unknown:
        return
    found = summary_store.row_states(tx.session, run_id=run_id, series_ids=unknown)
    for sid in unknown:
        state.row_last[sid], state.pending[sid] = found.get(sid, (None, 0))


def _families(
    tx: WriteTransaction, run_id: str, state: RunState, needed: bool
) -> block_store.RunSummaries:
    """The run's block summaries: from the state, else read when the batch needs them."""
    if state.records is not None:
        return block_store.RunSummaries(run_id, state.records, stored=state.records_stored)
    if needed:
        return block_store.load(tx.session, run_id=run_id)
    return block_store.RunSummaries(run_id, _NO_RECORDS)


def _rows_merged(state: RunState, summaries: list[dict[str, Any]]) -> None:
    """Count the batch's chunk rows and summary merges into the state (as the rows now hold)."""
    for row in summaries:
        sid, last = row["b_id"], row["b_last"]
        known = state.row_last.get(sid)
        state.row_last[sid] = last if known is None else max(known, last)
        state.pending[sid] = state.pending.get(sid, 0) + 1


def _series_due(state: RunState, series_ids: list[int]) -> list[int]:
    """The batch's series with ``COMPACT_AFTER_CHUNKS`` chunks stored since their compaction
    (counted as due once: compaction starts them from zero)."""
    due = []
    for sid in dict.fromkeys(series_ids):
        if state.pending[sid] >= COMPACT_AFTER_CHUNKS:
            due.append(sid)
            state.pending[sid] = 0
    return due


def _family_members_due(
    tx: WriteTransaction, run_id: str, state: RunState, blocks: list[DecodedBlock]
) -> list[int]:
    """A member of each family with ``COMPACT_AFTER_CHUNKS`` blocks stored (a family's blocks are
    compacted through any one member series, see ``services/compact.py``)."""
    if state.blocks is None:
        state.blocks = blocks_store.family_counts(tx.session, run_id=run_id)  # this batch's too
    else:
        for block in blocks:
            state.blocks[block.family] = state.blocks.get(block.family, 0) + 1
    due = []
    for family, count in state.blocks.items():
        if count >= COMPACT_AFTER_CHUNKS:
            member = blocks_store.first_member(tx.session, run_id=run_id, family=family)
            due += [] if member is None else [member]
            state.blocks[family] = 0
    return due
