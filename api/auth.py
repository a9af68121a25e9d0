"""Master-key authentication as a plain ASGI middleware."""

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import AuthError
from api.state import CurrentConfig

# Probes must work without a key (container healthchecks, load balancers).
OPEN_PATHS = frozenset({"/health/liveliness", "/health/liveness", "/health/readiness", "/"})


class MasterKeyAuth:
    """Requires `Authorization: Bearer <key>` (or `x-api-key`, `api-key`) on every other path."""

    def __init__(self, app: ASGIApp, current: CurrentConfig) -> None:
        self.app = app
        self._current = current  # the key can change on reload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self._current.master_key
        if scope["type"] != "http" or key is None or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        presented = _presented_key(scope["headers"])
        if presented is None:
            error = AuthError(
                "No API key provided: send 'Authorization: Bearer <master_key>'.",
                code="invalid_api_key",
            )
        elif not hmac.compare_digest(presented, key):
            error = AuthError("Invalid API key.", code="invalid_api_key")
        else:
            await self.app(scope, receive, send)
            return
        await error.response()(scope, receive, send)


def _presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else value.strip()
        if name in (b"x-api-key", b"api-key"):
            return value.strip()
    return None
