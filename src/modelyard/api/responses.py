"""The API's JSON answers, rendered with orjson (`modelyard.jsontext`)."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from modelyard.jsontext import encode


class FastJSONResponse(JSONResponse):
    """Starlette's JSONResponse, rendered with orjson; what it cannot encode, as before."""

    def render(self, content: Any) -> bytes:
        encoded = encode(content)
        return encoded if encoded is not None else super().render(content)
