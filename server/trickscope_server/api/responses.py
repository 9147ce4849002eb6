"""A JSON response rendered by orjson: chart payloads are large lists of floats."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class OrjsonResponse(JSONResponse):
    """``application/json`` via orjson (pydantic models are dumped first)."""

    def render(self, content: Any) -> bytes:
        """Serialise ``content``; non-finite floats must already be tokens."""
        if isinstance(content, BaseModel):
            content = content.model_dump(mode="json")
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
