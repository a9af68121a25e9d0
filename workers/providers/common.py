"""What every HTTP provider shares: a backend's error answers mapped to ProviderError."""

import email.utils
import time
from collections.abc import Mapping

import orjson

from inferq.config import Deployment
from inferq.workers.errors import BackendFailed, BackendRejected, ProviderError


def status_error(
    status: int, raw: bytes, headers: Mapping[str, str], deployment: Deployment
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
