"""API errors and the one place they become OpenAI (or, on `/v1/messages`, Anthropic) error
bodies.

GatewayError (status, type, code, param)
  ├── AuthError              401  missing or wrong key
  ├── InvalidRequest         400  bad body, unknown model
  ├── NotFound               404  unknown route
  ├── Unavailable            503  Redis unreachable, no reply channel
  ├── GatewayTimeout         504  no answer before the deadline
  └── UpstreamError          any  an error reported by a worker (status as reported)
"""

from typing import Any

import orjson
from starlette.responses import Response

from inferq.broker.messages import Reply


class GatewayError(Exception):
    """An error a client will see as `{"error": {...}}` with an HTTP status."""

    status = 500
    type = "api_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The OpenAI error object."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code if self.code is not None else str(self.status),
            }
        }

    def response(self) -> Response:
        """The HTTP response carrying this error."""
        return Response(
            orjson.dumps(self.body()),
            status_code=self.status,
            media_type="application/json",
            headers=self.headers,
        )

    def anthropic_response(self) -> Response:
        """The same error in Anthropic's format, for the Messages routes (`/v1/messages`)."""
        body = {"type": "error", "error": {"type": self.type, "message": self.message}}
        return Response(
            orjson.dumps(body),
            status_code=self.status,
            media_type="application/json",
            headers=self.headers,
        )


class AuthError(GatewayError):
    """Missing or wrong API key."""

    status = 401
    type = "authentication_error"


class InvalidRequest(GatewayError):
    """The request cannot be served as sent."""

    status = 400
    type = "invalid_request_error"


class NotFound(GatewayError):
    """No such route."""

    status = 404
    type = "not_found_error"


class Unavailable(GatewayError):
    """The fabric cannot take work right now."""

    status = 503
    type = "service_unavailable"


class GatewayTimeout(GatewayError):
    """No complete answer before the request's deadline."""

    status = 504
    type = "timeout"


class UpstreamError(GatewayError):
    """An error a worker reported for the job (backend refusal, failure, timeout)."""

    # The worker's terminal message, when there is one: the deployment and attempts it took.
    reply: Reply | None = None
