"""`GET /v1/models` and `GET /v1/models/{model}`: the model groups and aliases a client may name.

The list shows every group and every alias not marked hidden (for a virtual key limited to some
models, those). Retrieving by name answers for a hidden alias too: it serves requests when
named, so a client that names it may look it up; a model the key may not use is a 404.
"""

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from inferq.api.errors import GatewayError
from inferq.api.state import gateway
from inferq.api.tenants.principal import principal_of
from inferq.broker.tenants.access import allowed_names

_STARTED = int(time.time())


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": _STARTED, "owned_by": "inferq"}


async def list_models(request: Request) -> JSONResponse:
    """The OpenAI model list."""
    config = gateway(request).config
    record = principal_of(request.scope).record
    names = config.public_models() if record is None else allowed_names(record, config)
    return JSONResponse({"object": "list", "data": [_model(n) for n in names]})


async def retrieve_model(request: Request) -> JSONResponse:
    """One model object, or OpenAI's 404 `model_not_found` (also for a model this key may not
    use: it does not learn which models exist beyond its own)."""
    config = gateway(request).config
    model: str = request.path_params["model"]
    record = principal_of(request.scope).record
    if config.route(model) is None or (record and record.models and model not in record.models):
        raise GatewayError(
            f"The model '{model}' does not exist or you do not have access to it.",
            status=404,
            type="invalid_request_error",
            param="model",
            code="model_not_found",
        )
    return JSONResponse(_model(model))
