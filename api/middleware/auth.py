"""Authentication: the master key, or a virtual key (checked by `Gate`, api/middleware/gate.py).

A virtual key is checked against the per-process KeyCache (api/tenants/cache.py): a dict read
for a key seen before, one GET for a key seen first. Every refusal says the same thing, whatever
was wrong (unknown, expired, revoked), and no key or part of one is ever logged or echoed.
"""

import asyncio
import hmac
from contextlib import suppress
from typing import Any

from starlette.requests import cookie_parser
from starlette.responses import Response
from starlette.types import Scope

from inferq.api.errors import AuthError, GatewayError
from inferq.api.middleware.access import finish_response
from inferq.api.ops import session
from inferq.api.state import CurrentConfig
from inferq.api.tenants.cache import MISSING as _MISSING
from inferq.api.tenants.cache import KeyCache, expired
from inferq.api.tenants.guard import PermissionDenied
from inferq.api.tenants.principal import MASTER, Principal, set_principal
from inferq.api.tenants.throttle import AuthThrottle
from inferq.broker.errors import BrokerError
from inferq.broker.tenants.limits import count_auth_failure
from inferq.broker.tenants.vkeys import KEY_PREFIX, hash_key

# Probes must work without a key (container healthchecks, load balancers).
OPEN_PATHS = frozenset({"/health/liveliness", "/health/liveness", "/health/readiness", "/"})
# The dashboard's pages answer a browser that has no key yet themselves (with a login form).
DASHBOARD_PAGES = frozenset({"/ui", "/ui/login", "/ui/logout"})
# Routes for the master key and admin keys only (a key reads its own record at /key/info).
_ADMIN_PREFIXES = ("/key/", "/team/", "/ui/", "/metrics", "/health")
_ANTHROPIC_PREFIX = "/v1/messages"
_KEY_PREFIX = KEY_PREFIX.encode()
_KEY_MAX = 256
_INVALID = "Invalid API key."


class KeyAuth:
    """Requires `Authorization: Bearer <key>` (or `x-api-key`, `api-key`) on every other path;
    under `/ui/` the dashboard's login cookie is accepted instead."""

    def __init__(self, current: CurrentConfig) -> None:
        self._current = current  # the key can change on reload
        self.throttle = AuthThrottle()

    async def refusal(self, scope: Scope) -> Response | None:
        """None when the request may go on (its principal set in `scope`), else the answer
        that refuses it (401, 403 or 429)."""
        path = scope["path"]
        master = self._current.master_key
        if master is None or path in OPEN_PATHS or path in DASHBOARD_PAGES:
            return None
        address = _address(scope)
        error: GatewayError | None = self.throttle.refused(address)
        if error is None:
            found = await self._principal(scope, master, path)
            if isinstance(found, Principal):
                error = _forbidden(found, path)
                if error is None:
                    set_principal(scope, found)
                    return None
            else:
                error = await self._failed(scope, address) or found
        # The presented key is never logged: the line has the request id, path and status.
        # The Messages routes answer every error in Anthropic's format, these too.
        anthropic = path.startswith(_ANTHROPIC_PREFIX)
        response = error.anthropic_response() if anthropic else error.response()
        return finish_response(scope, response, error.type)

    async def _failed(self, scope: Scope, address: str) -> GatewayError | None:
        """Count a failed authentication here and for every process; hold the answer back
        as the count says, and return the 429 once the address is refused."""
        shared = None
        gw = _gateway(scope)
        if gw is not None:
            window = self.throttle.window
            with suppress(BrokerError):  # Redis away: this process's count still holds
                shared = await count_auth_failure(gw.redis, gw.keys, address, window)
        delay = self.throttle.failed(address, shared)
        if shared is not None and shared > self.throttle.refuse_after:
            return self.throttle.refused(address)  # refused already, through other processes
        if delay:
            await asyncio.sleep(delay)
        return None

    async def _principal(self, scope: Scope, master: str, path: str) -> Principal | AuthError:
        headers = scope["headers"]
        presented = _presented_key(headers)
        if presented is None:
            dashboard = path.startswith("/ui/")
            if dashboard and (login := await dashboard_login(scope, master)) is not None:
                return login
            return check(headers, master, dashboard=dashboard) or MASTER
        if hmac.compare_digest(presented, master.encode()):
            return MASTER
        found = await virtual_key(scope, presented)
        if found is None or found.record is None:
            return AuthError(_INVALID, code="invalid_api_key")
        return found


async def virtual_key(scope: Scope, presented: bytes) -> Principal | None:
    """The principal of a live virtual key (from this process's cache: no Redis round trip
    for a key seen before); None when it is not one (unknown, revoked, expired)."""
    cache = _cache(scope)
    if cache is None or not presented.startswith(_KEY_PREFIX) or len(presented) > _KEY_MAX:
        return None
    return await _live(cache, hash_key(presented))


async def dashboard_login(scope: Scope, master: str) -> Principal | None:
    """Who the dashboard's login cookie is: the master key, or an admin virtual key that is
    still live and still an admin key; None without a valid cookie."""
    token = session.holder(_cookie(scope["headers"], session.COOKIE), master)
    if token is None:
        return None
    if not token:
        return MASTER
    cache = _cache(scope)
    found = None if cache is None else await _live(cache, token)
    return found if found is not None and found.admin else None


async def _live(cache: KeyCache, token: str) -> Principal | None:
    found = cache.cached(token)
    if found is _MISSING:
        found = await cache.lookup(token)
    if found is None or found.record is None or expired(found.record):
        return None
    cache.used[found.record.key_id] = 0.0  # stamped when flushed: no clock read per request
    return found


def _forbidden(principal: Principal, path: str) -> GatewayError | None:
    if principal.admin or not path.startswith(_ADMIN_PREFIXES) or path == "/key/info":
        return None
    return PermissionDenied("This key may not use this route (it needs an admin key).")


def _gateway(scope: Scope) -> Any:
    app: Any = scope.get("app")
    return getattr(getattr(app, "state", None), "gateway", None)


def _cache(scope: Scope) -> KeyCache | None:
    gw = _gateway(scope)
    return None if gw is None else gw.key_cache


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


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
            f"No API key provided: send 'Authorization: Bearer <key>'{hint}.",
            code="invalid_api_key",
        )
    if not hmac.compare_digest(presented, master_key.encode()):
        return AuthError(_INVALID, code="invalid_api_key")
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
