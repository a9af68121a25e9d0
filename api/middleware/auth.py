"""Master-key authentication as a plain ASGI middleware."""

import hmac

from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from inferq.api.errors import AuthError
from inferq.api.middleware.access import finish_response
from inferq.api.ops import session
from inferq.api.state import CurrentConfig

# Probes must work without a key (container healthchecks, load balancers).
OPEN_PATHS = frozenset({"/health/liveliness", "/health/liveness", "/health/readiness", "/"})
# The dashboard's pages answer a browser that has no key yet themselves (with a login form).
DASHBOARD_PAGES = frozenset({"/ui", "/ui/login", "/ui/logout"})


class MasterKeyAuth:
    """Requires `Authorization: Bearer <key>` (or `x-api-key`, `api-key`) on every other path;
    under `/ui/` the dashboard's login cookie is accepted instead."""

    def __init__(self, app: ASGIApp, current: CurrentConfig) -> None:
        self.app = app
        self._current = current  # the key can change on reload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        key = self._current.master_key
        if scope["type"] != "http" or key is None or path in OPEN_PATHS or path in DASHBOARD_PAGES:
            await self.app(scope, receive, send)
            return
        error = check(scope["headers"], key, dashboard=path.startswith("/ui/"))
        if error is None:
            await self.app(scope, receive, send)
            return
        # The presented key is never logged: the line has the request id, path and status.
        await finish_response(scope, error.response(), error.type)(scope, receive, send)


def check(
    headers: list[tuple[bytes, bytes]], master_key: str, *, dashboard: bool = False
) -> AuthError | None:
    """None when the request presents the master key (or, with `dashboard`, a valid login
    cookie), else the error to answer with."""
    presented = _presented_key(headers)
    if presented is None:
        if dashboard and session.valid(_cookie(headers, session.COOKIE), master_key):
            return None
        hint = " or log in at /ui" if dashboard else ""
        return AuthError(
            f"No API key provided: send 'Authorization: Bearer <master_key>'{hint}.",
            code="invalid_api_key",
        )
    if not hmac.compare_digest(presented, master_key.encode()):
        return AuthError("Invalid API key.", code="invalid_api_key")
    return None


def _presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else value.strip()
        if name in (b"x-api-key", b"api-key"):
            return value.strip()
    return None


def _cookie(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    for header, value in headers:
        if header == b"cookie":
            found = cookie_parser(value.decode("latin-1")).get(name)
            if found is not None:
                return found
    return None
