"""Master-key authentication as a plain ASGI middleware."""

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from api.access import finish_response
from api.errors import AuthError

# Probes must work without a key (container healthchecks, load balancers).
OPEN_PATHS = frozenset({"/health/liveliness", "/health/liveness", "/health/readiness", "/"})


class MasterKeyAuth:
    """Requires `Authorization: Bearer <key>` (or `x-api-key`, `api-key`) on every other path."""

    def __init__(self, app: ASGIApp, master_key: str | None) -> None:
        self.app = app
        self._key = master_key.encode() if master_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._key is None or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        presented = _presented_key(scope["headers"])
        if presented is None:
            error = AuthError(
                "No API key provided: send 'Authorization: Bearer <master_key>'.",
                code="invalid_api_key",
            )
        elif not hmac.compare_digest(presented, self._key):
            error = AuthError("Invalid API key.", code="invalid_api_key")
        else:
            await self.app(scope, receive, send)
            return
        # The presented key is never logged: the line has the request id, path and status.
        await finish_response(scope, error.response(), error.type)(scope, receive, send)


def _presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else value.strip()
        if name in (b"x-api-key", b"api-key"):
            return value.strip()
    return None
