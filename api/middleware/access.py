"""The access log: one `inferq.access` line per request as it ends, and the request id.

Two places write the line, and a flag in the ASGI scope makes it one per request. The usage
Tracker writes it where a request's outcome is known (a non-stream answer, a stream's end, error
or disconnect, a cache hit: `finished`). `finish_response` writes it for what no Tracker followed
(401, 413, a 400 before the job existed, 404, the management routes) and puts `x-request-id` on
the response. There is no middleware wrapping `send`: on the hot path the line costs one dict
and one logging call, built once, with nothing awaited.
"""

import functools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from inferq.api.accounting.record import UsageRecord
from inferq.broker.messages import REQUEST_ID_PATTERN

log = logging.getLogger("inferq.access")

HEADER = "x-request-id"
# Every access line has these keys, in this order (None where unknown: left out of text lines,
# null in JSON ones).
FIELDS = (
    "request_id", "method", "path", "model", "group", "deployment", "status", "outcome",
    "latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens", "attempts", "fallback_from",
)  # fmt: skip

_HEADER_RAW = HEADER.encode()
_SANE = re.compile(REQUEST_ID_PATTERN).fullmatch
_ID = "inferq.request_id"  # scope keys
_LOGGED = "inferq.logged"

R = TypeVar("R", bound=Response)


def request_id(scope: Scope) -> str:
    """The request's id: the client's `x-request-id` when it is a sane token (at most 128 of
    `A-Za-z0-9._:-`), else a new one; the same all through the request."""
    rid: str | None = scope.get(_ID)
    if rid is None:
        rid = _from_client(scope["headers"]) or secrets.token_hex(12)
        scope[_ID] = rid
    return rid


def _from_client(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == _HEADER_RAW:
            text = value.decode("latin-1")
            return text if _SANE(text) else None
    return None


def finished(scope: Scope, rec: UsageRecord, status: int, requested_group: str) -> None:
    """The line of a request the usage Tracker followed to its end. `status` is what the client
    got on the wire: 200 for a stream that failed after it began (`outcome` says how)."""
    scope[_LOGGED] = True
    if not log.isEnabledFor(logging.INFO):
        return
    known = rec.error_type is None  # a failed request's tokens are not known
    fields = {
        "request_id": rec.request_id,
        "method": scope["method"],
        "path": scope["path"],
        "model": rec.model,
        "group": rec.group or None,
        "deployment": rec.deployment or None,
        "status": status,
        "outcome": "cache_hit" if rec.cache_hit else rec.error_type or "ok",
        "latency_ms": rec.latency_ms,
        "ttft_ms": rec.ttft_ms,
        "prompt_tokens": rec.prompt_tokens if known else None,
        "completion_tokens": rec.completion_tokens if known else None,
        "attempts": rec.attempts,
        "fallback_from": requested_group if rec.group != requested_group else None,
    }
    log.info("request", extra={"fields": fields})


def finish_response(
    scope: Scope,
    response: R,
    outcome: str,
    *,
    started: float | None = None,
    level: int = logging.INFO,
) -> R:
    """`response` with the request's `x-request-id`; writes the request's line unless a Tracker
    did (`started`: its `time.monotonic()` start, when known)."""
    response.headers[HEADER] = request_id(scope)
    if scope.get(_LOGGED):
        return response
    scope[_LOGGED] = True
    if log.isEnabledFor(level):
        fields: dict[str, Any] = dict.fromkeys(FIELDS)
        fields["request_id"] = scope[_ID]
        fields["method"] = scope.get("method")
        fields["path"] = scope.get("path")
        fields["status"] = response.status_code
        fields["outcome"] = outcome
        if started is not None:
            fields["latency_ms"] = round((time.monotonic() - started) * 1000, 2)
        log.log(level, "request", extra={"fields": fields})
    return response


def logged(
    route: Callable[[Request], Awaitable[R]], *, probe: bool = False
) -> Callable[[Request], Coroutine[Any, Any, R]]:
    """`route` (one no Tracker follows: models, health, usage, metrics) with its request id and
    access line. A probe that succeeds logs at DEBUG: health checks must not flood the log."""

    @functools.wraps(route)
    async def with_line(request: Request) -> R:
        started = time.monotonic()
        response = await route(request)
        status = response.status_code
        level = logging.DEBUG if probe and status < 400 else logging.INFO
        outcome = "ok" if status < 400 else "service_unavailable" if status == 503 else "error"
        return finish_response(request.scope, response, outcome, started=started, level=level)

    return with_line
