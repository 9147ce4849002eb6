"""The block form of a batch: one statistic of many layers as one members x steps matrix.

``watch`` sends each flush's per-layer statistics as blocks: one block per statistic instead of
one series per layer, so the server stores one row per block (``storage/blocks.py``) and
summarises all members with a few array operations (``storage/block_summaries.py``). A block's
values are one column of every layer's values, row-major (wire version 4: one base64 decode per
statistic); the agents of wire versions 2 and 3 send a column per layer, still taken.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np
import pybase64
from numpy.typing import NDArray

from trickscope_server.errors import PayloadTooLargeError
from trickscope_server.services._convert import F64, I64
from trickscope_server.services._payload import b64decode, checked_name, column, fail
from trickscope_server.storage import summaries as summary_store
from trickscope_server.storage.block_summaries import RunSummaries
from trickscope_server.storage.transaction import WriteTransaction


@dataclass(slots=True)
class DecodedBlock:
    """One block of a batch: member names, the shared steps and times, the value matrix."""

    family: str
    names: list[str]
    steps_raw: bytes
    times_raw: bytes
    values_raw: bytes
    steps: NDArray[np.int64]
    values: NDArray[np.float64]  # (members, steps)
    layout: tuple[str, tuple[str, ...]]  # (family, layers): the same object for equal layouts


def _row(text: Any, loc: list[str | int], name: str, size: int) -> bytes:
    if type(text) is not str:
        raise fail(loc, f"series {name!r}: must be a base64 string, got {type(text).__name__}")
    try:
        raw = b64decode(text)
    except (binascii.Error, ValueError) as exc:
        raise fail(loc, f"series {name!r}: not valid base64 ({exc})") from None
    if len(raw) != size:
        raise fail(loc, f"series {name!r}: {len(raw)} bytes, the block's steps need {size}")
    return raw


# Member names of blocks seen before, by (family, layers), with the longest one's length: a run
# sends the same layers in every flush, and checking each name costs more than looking their
# tuple up. Cleared when full.
_KNOWN_LAYOUTS: dict[
    tuple[str, tuple[str, ...]], tuple[list[str], int, tuple[str, tuple[str, ...]]]
] = {}
_KNOWN_LAYOUTS_MAX = 1024


def member_names(
    family: str, layers: list[Any], loc: list[str | int], max_name: int
) -> tuple[list[str], tuple[str, tuple[str, ...]]]:
    """``family/<layer>`` for each layer, each checked, none twice; and the layout's key."""
    key = (family, tuple(layers))
    try:
        known = _KNOWN_LAYOUTS.get(key)
    except TypeError:  # a layer that is not hashable: reported below
        known = None
    if known is not None and known[1] <= max_name:
        return known[0], known[2]
    prefix = family + "/"
    names = []
    for j, layer in enumerate(layers):
        if not isinstance(layer, str) or not layer:
            raise fail([*loc, "layers", j], "must be a non-empty string")
        names.append(checked_name(prefix + layer, [*loc, "layers", j], max_name))
    if len(set(names)) != len(names):
        raise fail([*loc, "layers"], f"block {family!r}: a layer is named twice")
    if len(_KNOWN_LAYOUTS) >= _KNOWN_LAYOUTS_MAX:
        _KNOWN_LAYOUTS.clear()
    _KNOWN_LAYOUTS[key] = (names, max(map(len, names), default=0), key)
    return names, key


def _rows(rows: list[Any], loc: list[str | int], names: list[str], size: int) -> bytes:
    """The block's value rows (base64, ``size`` bytes each) decoded and joined, row-major.

    Decoded in one pass (SIMD, see :func:`b64decode`); a block with a row at fault is decoded
    again row by row, which names the row.
    """
    try:
        decoded = [pybase64.b64decode(text, validate=True) for text in rows]
    except (binascii.Error, ValueError, TypeError):
        decoded = []
    if len(decoded) == len(rows) and (not rows or set(map(len, decoded)) == {size}):
        return b"".join(decoded)
    return b"".join(
        [_row(text, [*loc, "values", j], names[j], size) for j, text in enumerate(rows)]
    )


def _matrix(text: str, loc: list[str | int], family: str, members: int, size: int) -> bytes:
    """The block's values sent as one column (wire version 4): ``members`` rows of ``size``
    bytes, row-major."""
    try:
        raw = b64decode(text)
    except (binascii.Error, ValueError) as exc:
        raise fail([*loc, "values"], f"block {family!r}: not valid base64 ({exc})") from None
    if len(raw) != members * size:
        raise fail(
            [*loc, "values"],
            f"block {family!r}: {len(raw)} bytes, its {members} layers x {size // 8} steps "
            f"need {members * size}",
        )
    return raw


def parse_blocks(
    raw: Any, *, points: int, max_points: int, max_name: int
) -> tuple[list[DecodedBlock], int]:
    """Validate a batch's ``blocks`` and decode them; returns them and the batch's point count."""
    if not isinstance(raw, list):
        raise fail(["body", "blocks"], "must be a list of statistic blocks")
    out: list[DecodedBlock] = []
    for i, item in enumerate(raw):
        loc: list[str | int] = ["body", "blocks", i]
        if not isinstance(item, dict):
            raise fail(loc, f"must be an object, got {type(item).__name__}")
        family = checked_name(item.get("family"), [*loc, "family"], max_name)
        if "/" in family:
            raise fail([*loc, "family"], "must be a statistic name without '/'")
        layers, rows = item.get("layers"), item.get("values")
        if not isinstance(layers, list) or not (
            type(rows) is str or (isinstance(rows, list) and len(layers) == len(rows))
        ):
            raise fail(
                loc,
                f"block {family!r}: layers must be a list, and values one column of every "
                "layer's values or a list of one column per layer",
            )
        steps = column(item.get("steps"), [*loc, "steps"], family)
        times = column(item.get("times"), [*loc, "times"], family)
        if len(steps) != len(times):
            raise fail(loc, f"block {family!r}: steps and times differ in length")
        points += len(layers) * (len(steps) // 8)
        if points > max_points:
            raise PayloadTooLargeError(
                f"batch holds more than the server's limit of {max_points} points "
                "(TRICKSCOPE_MAX_BATCH_POINTS): send smaller batches"
            )
        names, layout = member_names(family, layers, loc, max_name)
        if type(rows) is str:
            values = _matrix(rows, loc, family, len(names), len(steps))
        else:
            values = _rows(rows, loc, names, len(steps))
        step_array = np.frombuffer(steps, dtype=I64)
        out.append(
            DecodedBlock(
                family,
                names,
                steps,
                times,
                values,
                step_array,
                np.frombuffer(values, dtype=F64).reshape(len(names), step_array.size),
                layout,
            )
        )
    return out, points


def increasing_steps(steps: NDArray[np.int64]) -> bool:
    """Whether a block's steps can be stored as one block: some, strictly increasing (a block
    that repeats a step is stored series by series, whose summaries handle repeats)."""
    return bool(steps.size and np.all(steps[1:] > steps[:-1]))


def sub_block(block: DecodedBlock, rows: list[int]) -> DecodedBlock:
    """A block of these rows (members) of ``block`` only."""
    values = np.ascontiguousarray(block.values[rows])
    layers = tuple(block.layout[1][i] for i in rows)
    return DecodedBlock(
        block.family,
        [block.names[i] for i in rows],
        block.steps_raw,
        block.times_raw,
        values.tobytes(),
        block.steps,
        values,
        (block.family, layers),
    )


def block_row(
    block: DecodedBlock, run_id: str, seq: int, members: NDArray[np.int64]
) -> dict[str, Any]:
    """The ``blocks`` row of a decoded block whose members have these series ids."""
    return {
        "run_id": run_id,
        "family": block.family,
        "seq": seq,
        "step_min": int(block.steps[0]),
        "step_max": int(block.steps[-1]),
        "steps_count": int(block.steps.size),
        "members": members.tobytes(),
        "steps": block.steps_raw,
        "times": block.times_raw,
        "values": block.values_raw,
    }


def merge_blocks(
    tx: WriteTransaction,
    blocks: list[DecodedBlock],
    members: list[NDArray[np.int64]],
    summaries: RunSummaries,
) -> set[int]:
    """Merge the blocks into the run's block summaries; returns the ids of the members that
    re-log a stored step, to be recounted from their points instead.

    Blocks over the same steps (a flush's statistics all are) are merged as one stacked matrix.
    """
    by_steps: dict[bytes, list[int]] = {}
    for i, block in enumerate(blocks):
        by_steps.setdefault(block.steps_raw, []).append(i)
    recount: set[int] = set()
    for group in by_steps.values():
        ids = np.concatenate([members[i] for i in group])
        values = np.concatenate([blocks[i].values for i in group])
        new = summaries.unknown(ids)
        # A member's first block: its row may hold points already (an older agent's).
        rows = summary_store.row_last_steps(tx.session, series_ids=new.tolist()) if new.size else {}
        again = summaries.merge(ids, blocks[group[0]].steps, values, rows)
        recount.update(again.tolist())
    return recount
