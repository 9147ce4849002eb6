"""The wire contract between the trickscope agent and server (standard library only).

One source of truth for what crosses the network: payload dataclasses, the protocol version and
pure encoders for the packed numeric columns. The server validates these dataclasses directly
(FastAPI accepts standard dataclasses as bodies); the agent builds them and serialises with
:func:`dumps`.
"""

from trickscope_wire.columns import (
    decode_f64,
    decode_i64,
    encode_f64,
    encode_f64_rows,
    encode_i64,
    finite_or_token,
    token_to_float,
)
from trickscope_wire.payloads import (
    BLOCKS_WIRE_VERSION,
    HISTOGRAM_BLOCKS_WIRE_VERSION,
    MATRIX_BLOCKS_WIRE_VERSION,
    WIRE_VERSION,
    AgentFinding,
    FindingsDeclare,
    HistogramBlock,
    HistogramColumns,
    LayersDeclare,
    PointBatch,
    RankDeclare,
    RunCreate,
    RunFinish,
    SeriesColumns,
    SetupDeclare,
    StatBlock,
    dumps,
)

__all__ = [
    "BLOCKS_WIRE_VERSION",
    "HISTOGRAM_BLOCKS_WIRE_VERSION",
    "MATRIX_BLOCKS_WIRE_VERSION",
    "WIRE_VERSION",
    "AgentFinding",
    "FindingsDeclare",
    "HistogramBlock",
    "HistogramColumns",
    "LayersDeclare",
    "PointBatch",
    "RankDeclare",
    "RunCreate",
    "RunFinish",
    "SeriesColumns",
    "SetupDeclare",
    "StatBlock",
    "decode_f64",
    "decode_i64",
    "dumps",
    "encode_f64",
    "encode_f64_rows",
    "encode_i64",
    "finite_or_token",
    "token_to_float",
]
