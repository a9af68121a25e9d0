"""`GET /v1/models` and `GET /v1/models/{model}`: the model groups and aliases a client may name.

The list shows every group and every alias not marked hidden. Retrieving by name answers for a
hidden alias too: it serves requests when named, so a client that names it may look it up.
"""

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from inferq.api.errors import GatewayError
from inferq.api.state import gateway

_STARTED = int(time.time())


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": _STARTED, "owned_by": "inferq"}


async def list_models(request: Request) -> JSONResponse:
    """The OpenAI model list."""
    config = gateway(request).config
    return JSONResponse({"object": "list", "data": [_model(n) for n in config.public_models()]})


async def retrieve_model(request: Request) -> JSONResponse:
    """One model object, or OpenAI's 404 `model_not_found`."""
    config = gateway(request).config
    model: str = request.path_params["model"]
    if config.route(model) is None:
        raise GatewayError(
            f"The model '{model}' does not exist or you do not have access to it.",
            status=404,
            type="invalid_request_error",
            param="model",
            code="model_not_found",
        )
    return JSONResponse(_model(model))
