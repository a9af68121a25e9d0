"""`GET /v1/models`: every model group and every alias not marked hidden (for a virtual key
limited to some models, those)."""

import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from inferq.api.state import gateway
from inferq.api.tenants.principal import principal_of
from inferq.broker.tenants.access import allowed_names

_STARTED = int(time.time())


async def list_models(request: Request) -> JSONResponse:
    """The OpenAI model list."""
    config = gateway(request).config
    record = principal_of(request.scope).record
    names = config.public_models() if record is None else allowed_names(record, config)
    data = [
        {"id": name, "object": "model", "created": _STARTED, "owned_by": "inferq"} for name in names
    ]
    return JSONResponse({"object": "list", "data": data})
