"""The sender's bulk encoding: columns packed from a tensor's bytes, batches through orjson,
each equal to what the plain wire encoders make of the same values."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from trickscope.batches import (
    HistogramBuffer,
    as_blocks,
    encode_points,
    histogram_payloads,
    joined_column,
    joined_series,
    packed_rows,
    point_batch,
)
from trickscope_wire import (
    HISTOGRAM_BLOCKS_WIRE_VERSION,
    MATRIX_BLOCKS_WIRE_VERSION,
    WIRE_VERSION,
    HistogramColumns,
    PointBatch,
    SeriesColumns,
    decode_f64,
    decode_i64,
    dumps,
    encode_f64,
    encode_i64,
)


def sample_rows() -> torch.Tensor:
    """A (keys, samples) float64 matrix holding every kind of float32 value a statistic takes."""
    torch.manual_seed(0)
    rows = torch.randn(5, 7, dtype=torch.float32)
    rows[0, 1], rows[1, 2], rows[2, 3], rows[3, 4] = math.inf, -math.inf, -0.0, 3.4e38
    rows[4, 0] = 1e-45  # the smallest float32 subnormal
    return rows.to(torch.float64).contiguous()


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_packed_rows_equal_the_plain_encoder(
    monkeypatch: pytest.MonkeyPatch, byteorder: str
) -> None:
    """``big``: the per-value path a big-endian host takes (the encoding is little-endian on
    every host)."""
    monkeypatch.setattr(sys, "byteorder", byteorder)
    matrix = sample_rows()
    assert packed_rows(matrix) == [encode_f64(row.tolist()) for row in matrix]
    empty = torch.zeros(3, 0, dtype=torch.float64)
    assert packed_rows(empty) == [encode_f64([])] * 3


def test_packed_rows_keep_nan() -> None:
    matrix = torch.tensor([[math.nan, 1.0], [2.0, math.nan]], dtype=torch.float64)
    decoded = [list(decode_f64(text)) for text in packed_rows(matrix)]
    assert math.isnan(decoded[0][0]) and decoded[0][1] == 1.0
    assert decoded[1][0] == 2.0 and math.isnan(decoded[1][1])


def test_a_batch_through_orjson_is_the_json_the_wire_encoder_writes() -> None:
    steps, times = encode_i64([1, 2]), encode_f64([10.0, 11.0])
    batch = PointBatch(
        batch_id="b1",
        series=[
            SeriesColumns("grad_norm/w", steps, encode_f64([math.nan, 2.0]), times),
            # A layer name in any script, and a newline (the journal is one request per line).
            SeriesColumns("grad_norm/层.\nweight", steps, encode_f64([1.0, 2.0]), times),
        ],
        histograms=[
            HistogramColumns(
                name="grad_hist/w",
                bins=2,
                steps=steps,
                lo=encode_f64([0.0, 0.0]),
                hi=encode_f64([1.0, 1.0]),
                counts=encode_f64([1.0, 2.0, 3.0, 4.0]),
                nonfinite=encode_f64([0.0, 1.0]),
                times=times,
            )
        ],
    )
    body = encode_points(batch)
    assert json.loads(body) == json.loads(dumps(as_blocks(batch)))
    assert b"\n" not in body
    # The two layers share their steps and times objects: one block, its values one column
    # (layer by layer), in the version that says so.
    sent = json.loads(body)
    assert sent["series"] == [] and sent["wire_version"] == MATRIX_BLOCKS_WIRE_VERSION
    (block,) = sent["blocks"]
    assert block["family"] == "grad_norm" and block["layers"] == ["w", "层.\nweight"]
    values = list(decode_f64(block["values"]))
    assert math.isnan(values[0]) and values[1:] == [2.0, 1.0, 2.0]


def test_columns_join_into_one_whatever_their_padding() -> None:
    """Columns of 1 and 2 values (base64 with padding inside the joined bytes) and an empty
    one join into the column of their values, NaN and infinities exact."""
    columns = [encode_f64([1.0]), encode_f64([math.nan, -math.inf]), encode_f64([]), "AAAAAAAA8D8="]
    joined = list(decode_f64(joined_column(columns)))
    assert joined[0] == 1.0 and math.isnan(joined[1]) and joined[2:] == [-math.inf, 1.0]
    assert joined_column([]) == ""


def _buffer(bins: int, steps: list[int], seed: float) -> HistogramBuffer:
    hist = HistogramBuffer(bins)
    for k, step in enumerate(steps):
        hist.steps.append(step)
        hist.times.append(100.0 + step)
        hist.lo.append(-seed - k)
        hist.hi.append(math.inf if k else seed)
        hist.nonfinite.append(float(k))
        hist.counts.extend(seed * 10 + k * bins + b for b in range(bins))
    return hist


def test_a_familys_histograms_over_the_same_steps_go_as_one_block_the_others_one_by_one() -> None:
    buffers = {
        "grad_hist/a": _buffer(3, [0, 10], 1.0),
        "grad_hist/b": _buffer(3, [0, 10], 2.0),
        "grad_hist/c": _buffer(3, [10], 3.0),  # other steps: on its own
        "grad_hist/d": _buffer(5, [0, 10], 4.0),  # other bins: on its own
        "weight_hist/a": _buffer(3, [0, 10], 5.0),
        "weight_hist/long name": _buffer(3, [0, 10], 6.0),
        "plain": _buffer(3, [0, 10], 7.0),  # no family
        "grad_hist/bx": _buffer(3, [0, 10], 8.0),  # cleaned into grad_hist/b below
    }
    clean = {"grad_hist/bx": "grad_hist/b"}
    singles, blocks = histogram_payloads(buffers, lambda name: clean.get(name, name))
    assert sorted(h.name for h in singles) == ["grad_hist/b", "grad_hist/c", "grad_hist/d", "plain"]
    assert [(b.family, b.layers, b.bins) for b in blocks] == [
        ("grad_hist", ["a", "b"], 3),
        ("weight_hist", ["a", "long name"], 3),
    ]
    for block in blocks:
        for row, layer in enumerate(block.layers):
            member = buffers[f"{block.family}/{layer}"]
            assert list(decode_i64(block.steps)) == member.steps
            assert list(decode_f64(block.times)) == member.times
            for key in ("lo", "hi", "nonfinite"):
                values = list(decode_f64(getattr(block, key)))
                assert values[row * 2 : row * 2 + 2] == getattr(member, key), key
            counts = list(decode_f64(block.counts))
            assert counts[row * 6 : row * 6 + 6] == member.counts
    batch = point_batch("b1", [], singles, blocks)
    assert batch.wire_version == HISTOGRAM_BLOCKS_WIRE_VERSION
    assert point_batch("b2", [], singles, []).wire_version == WIRE_VERSION
    assert json.loads(encode_points(batch))["wire_version"] == HISTOGRAM_BLOCKS_WIRE_VERSION


def test_series_named_in_both_flushes_are_joined_in_step_order_and_the_later_wins() -> None:
    steps, times = encode_i64([4, 8]), encode_f64([40.0, 80.0])
    stats = [
        SeriesColumns("grad_norm/total", steps, encode_f64([0.4, math.nan]), times),
        SeriesColumns("grad_norm/fc.weight", steps, encode_f64([1.0, 2.0]), times),
        SeriesColumns("grad_norm/fc.bias", steps, encode_f64([3.0, 4.0]), times),
    ]
    logged = [
        SeriesColumns(
            "grad_norm/total",
            encode_i64([5, 6, 7, 8, 9]),
            encode_f64([0.5, 0.6, math.inf, 0.8, 0.9]),
            encode_f64([50.0, 60.0, 70.0, 80.5, 90.0]),
        ),
        SeriesColumns("loss", encode_i64([9]), encode_f64([-1.0]), encode_f64([90.0])),
    ]
    joined = joined_series(stats, logged)
    assert [s.name for s in joined] == [
        "grad_norm/total",
        "grad_norm/fc.weight",
        "grad_norm/fc.bias",
        "loss",
    ]
    total = joined[0]
    assert list(decode_i64(total.steps)) == [4, 5, 6, 7, 8, 8, 9]
    # Step 8 is in both: the statistics' NaN first, the logged 0.8 after it (the later wins).
    values = [repr(v) for v in decode_f64(total.values)]
    assert values == ["0.4", "0.5", "0.6", "inf", "nan", "0.8", "0.9"]
    assert list(decode_f64(total.times)) == [40.0, 50.0, 60.0, 70.0, 80.0, 80.5, 90.0]
    # Named once: the very objects, so the statistics' shared columns still make a block.
    assert joined[1] is stats[1] and joined[2] is stats[2] and joined[3] is logged[1]
    batch = as_blocks(point_batch("b", joined, [], []))
    assert [b.family for b in batch.blocks] == ["grad_norm"]
    assert batch.blocks[0].layers == ["fc.weight", "fc.bias"]
    assert [s.name for s in batch.series] == ["grad_norm/total", "loss"]
