"""The server's default input limits, shared so the agent can keep its own requests inside them.

The server refuses past these (a 422 naming the field); each is a server setting
(``TRICKSCOPE_MAX_*``) whose default is the value here. Depth counts containers: ``{}`` is 1.
"""

from __future__ import annotations

MAX_JSON_DEPTH = 32  # config, system, setup, finding evidence
MAX_DOCUMENT_BYTES = 1 << 20  # config and system, encoded as JSON
MAX_TAGS = 256
MAX_TAG_CHARS = 256
MAX_NAME_CHARS = 256  # project and run name (the database columns hold 256)
MAX_SERIES_NAME_CHARS = 512  # series, histogram and layer names (the columns hold 512)
MAX_LAYERS = 100_000

INT64_MIN = -(1 << 63)  # steps and integer query parameters
INT64_MAX = (1 << 63) - 1
UNIX_MIN = 0.0  # started_at, ended_at: Unix seconds a datetime can show
UNIX_MAX = 253402300799.0  # 9999-12-31T23:59:59Z
