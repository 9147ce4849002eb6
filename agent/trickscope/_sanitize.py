"""What users hand the agent, made into values the server stores.

The server refuses, with a 422, text a database cannot hold (NUL, lone UTF-16 surrogates),
non-finite numbers in JSON documents, documents nested deeper than 32 containers or larger than
1 MiB, and names, tags and lists past their lengths. The agent's own requests must always pass,
so it repairs such input here instead of losing a run's config or points to a refusal:
unstorable characters become U+FFFD, non-finite numbers the strings ``"NaN"``, ``"Infinity"``
and ``"-Infinity"``, containers past the depth limit their ``repr``, long text is cut.
"""

from __future__ import annotations

import json
import numbers
import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from torch import Tensor

from trickscope_wire import finite_or_token

MAX_DEPTH = 32  # containers; the document itself is depth 1
MAX_DOCUMENT_BYTES = 1 << 20  # config and system
MAX_TAGS = 256
MAX_TAG_CHARS = 256
MAX_NAME_CHARS = 256  # project, run name
MAX_SERIES_CHARS = 512  # series, histogram and layer names
MAX_LAYERS = 100_000
_CUT_VALUE_CHARS = 1000  # what an oversized config value keeps of its repr

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def clean_text(text: str, limit: int | None = None) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD, cut to ``limit`` characters.

    A well-formed surrogate pair (two code points, as ``json.loads`` of an escaped pair gives
    on narrow input) is joined into its one character rather than replaced.
    """
    if _UNSTORABLE.search(text) is not None:
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        text = text.replace("\x00", "\ufffd")
    if limit is not None and len(text) > limit:
        text = text[:limit]
    return text


def clean_names(names: list[str], *, limit: int, count: int) -> list[str]:
    """At most ``count`` names, each cleaned and cut to ``limit`` characters."""
    return [clean_text(str(name), limit) for name in names[:count]]


def json_safe(value: Any, depth: int = 0) -> Any:
    """A JSON-encodable copy of a config value the server stores as is.

    Tensors via ``repr``, paths and other objects via ``str``, non-finite floats as
    ``"NaN"``/``"Infinity"``/``"-Infinity"``, text cleaned (:func:`clean_text`), and a
    container that would sit deeper than :data:`MAX_DEPTH` as its ``repr``.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, Tensor):
        return clean_text(repr(value))
    if isinstance(value, numbers.Real):
        return finite_or_token(float(value))
    if isinstance(value, (Mapping, list, tuple, set, frozenset)):
        if depth >= MAX_DEPTH:
            return clean_text(_repr(value))
        if isinstance(value, Mapping):
            return {clean_text(str(key)): json_safe(item, depth + 1) for key, item in value.items()}
        return [json_safe(item, depth + 1) for item in value]
    if isinstance(value, PurePath):
        return clean_text(str(value))
    return clean_text(str(value))


def json_document(value: Mapping[str, Any], max_bytes: int = MAX_DOCUMENT_BYTES) -> dict[str, Any]:
    """:func:`json_safe` of a top-level document (config, system) within ``max_bytes`` encoded:
    past it, the largest values are replaced, one by one, by the start of their text."""
    document: dict[str, Any] = json_safe(dict(value))
    sizes = {key: _size(item) for key, item in document.items()}
    total = _size(document)
    for key in sorted(sizes, key=sizes.__getitem__, reverse=True):
        if total <= max_bytes:
            break
        text = json.dumps(document[key], ensure_ascii=False)
        document[key] = f"{text[:_CUT_VALUE_CHARS]}... ({sizes[key]} bytes, cut to fit)"
        total += _size(document[key]) - sizes[key]
    return document


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except RecursionError:  # a structure nested past the interpreter's limit
        return f"<{type(value).__name__} nested too deep to show>"
