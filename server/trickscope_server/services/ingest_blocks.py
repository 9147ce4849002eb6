"""The block form of a batch: one statistic of many layers as one members x steps matrix.

``watch`` sends each flush's per-layer statistics as blocks (wire version 2): one column per
statistic instead of one per series, so the server decodes a dozen columns instead of thousands,
stores one row per block (``storage/blocks.py``) and summarises all members with a few array
operations (``storage/block_summaries.py``).
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trickscope_server.errors import PayloadTooLargeError
from trickscope_server.services._convert import F64, I64
from trickscope_server.services._payload import STORABLE_NAMES, checked_name, column, fail
from trickscope_server.storage.block_summaries import FamilySummaries


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


def _row(text: Any, loc: list[str | int], name: str, size: int) -> bytes:
    if type(text) is not str:
        raise fail(loc, f"series {name!r}: must be a base64 string, got {type(text).__name__}")
    try:
        raw = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise fail(loc, f"series {name!r}: not valid base64 ({exc})") from None
    if len(raw) != size:
        raise fail(loc, f"series {name!r}: {len(raw)} bytes, the block's steps need {size}")
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
        if not isinstance(layers, list) or not isinstance(rows, list) or len(layers) != len(rows):
            raise fail(loc, f"block {family!r}: layers and values must be lists of equal length")
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
        prefix = family + "/"
        names = []
        for j, layer in enumerate(layers):
            name = prefix + layer if type(layer) is str else layer
            if not (type(name) is str and name in STORABLE_NAMES and len(name) <= max_name):
                if not isinstance(layer, str) or not layer:
                    raise fail([*loc, "layers", j], "must be a non-empty string")
                name = checked_name(name, [*loc, "layers", j], max_name)
            names.append(name)
        if len(set(names)) != len(names):
            raise fail([*loc, "layers"], f"block {family!r}: a layer is named twice")
        values = b"".join(
            [_row(text, [*loc, "values", j], names[j], len(steps)) for j, text in enumerate(rows)]
        )
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
            )
        )
    return out, points


def storable_as_block(block: DecodedBlock) -> bool:
    """Whether a block can be stored as one: it has points and strictly increasing steps (a
    block that repeats a step is stored series by series, whose summaries handle repeats)."""
    steps = block.steps
    return bool(steps.size and block.names and np.all(steps[1:] > steps[:-1]))


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
    blocks: list[DecodedBlock],
    members: list[NDArray[np.int64]],
    stored_last: dict[int, int],
    families: FamilySummaries,
) -> set[int]:
    """Merge the blocks into their families' summaries; returns the ids of the members that
    re-log a stored step (``stored_last``: the last stored step of series that have one at or
    above the blocks' lowest step), to be recounted from their points instead."""
    recount: set[int] = set()
    lasts = families.last_steps(min(int(b.steps[0]) for b in blocks)) if blocks else {}
    for source in (stored_last, lasts):
        for block, ids in zip(blocks, members, strict=True):
            if not source:
                break
            first = int(block.steps[0])
            recount.update(sid for sid in ids.tolist() if source.get(sid, first - 1) >= first)
    for block, ids in zip(blocks, members, strict=True):
        families.merge_block(block.family, ids, block.steps, block.values, recount)
    return recount
