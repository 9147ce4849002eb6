"""A JSON response rendered by orjson: chart payloads are large lists of floats."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from trickscope_server.services._convert import readable


class OrjsonResponse(JSONResponse):
    """``application/json`` via orjson (pydantic models are dumped first)."""

    def render(self, content: Any) -> bytes:
        """Serialise ``content``; non-finite floats must already be tokens.

        Stored JSON that orjson refuses (a lone surrogate or an integer past 64 bits, stored
        before the server checked its input) is made readable and encoded by the standard
        library instead: an old row never turns a read into a server error.
        """
        if isinstance(content, BaseModel):
            content = content.model_dump(mode="json")
        try:
            return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
        except orjson.JSONEncodeError:
            safe = readable(content)
            return json.dumps(safe, ensure_ascii=False, default=_plain).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return str(value)
