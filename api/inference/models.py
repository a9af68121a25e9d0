"""`GET /v1/models`: every model group and every alias not marked hidden."""

import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from inferq.api.state import gateway

_STARTED = int(time.time())


async def list_models(request: Request) -> JSONResponse:
    """The OpenAI model list."""
    config = gateway(request).config
    data = [
        {"id": name, "object": "model", "created": _STARTED, "owned_by": "inferq"}
        for name in config.public_models()
    ]
    return JSONResponse({"object": "list", "data": data})
