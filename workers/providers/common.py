"""What every HTTP provider shares: transport and status errors mapped to ProviderError."""

import email.utils
import time

import httpx
import orjson

from inferq.config import Deployment
from inferq.workers.errors import (
    BackendFailed,
    BackendProtocolError,
    BackendRejected,
    BackendTimeout,
    BackendUnreachable,
    ProviderError,
)


def transport_error(exc: httpx.HTTPError, deployment: Deployment) -> ProviderError:
    name = deployment.id
    if isinstance(exc, httpx.ConnectTimeout):
        return BackendUnreachable(f"{name}: timed out connecting to the backend")
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimeout(f"{name}: the backend did not answer in time")
    if isinstance(exc, httpx.ConnectError):
        return BackendUnreachable(f"{name}: cannot connect to the backend")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return BackendProtocolError(f"{name}: the backend dropped the connection mid-response")
    return BackendUnreachable(f"{name}: {type(exc).__name__} talking to the backend")


def status_error(
    status: int, raw: bytes, headers: httpx.Headers, deployment: Deployment
) -> ProviderError:
    message, code, param = error_fields(raw)
    text = f"{deployment.id} returned {status}: {message}"
    wait = retry_after(headers.get("retry-after"))
    if status >= 500:
        return BackendFailed(text, code=code, retry_after=wait)
    return BackendRejected(text, status=status, code=code, param=param, retry_after=wait)


def error_fields(raw: bytes) -> tuple[str, str | None, str | None]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:300].decode("utf-8", "replace").strip() or "no details", None, None
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        message = str(error.get("message") or error.get("detail") or error)[:1000]
        code = error.get("code") or error.get("type")  # Anthropic names errors by type
        param = error.get("param")
        return message, str(code) if code else None, str(param) if param else None
    return str(error)[:1000], None, None


def retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # neither seconds nor an HTTP date: ignore it
    return max(parsed.timestamp() - time.time(), 0.0)
