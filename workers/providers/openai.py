"""OpenAI-compatible provider: OpenAI itself, llama.cpp's server, vLLM and friends (httpx)."""

import email.utils
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from config import Deployment
from workers.errors import (
    BackendFailed,
    BackendProtocolError,
    BackendRejected,
    BackendTimeout,
    BackendUnreachable,
    ProviderError,
)
from workers.providers.base import Chunk
from workers.providers.sse import SSEParser

_CONNECT_TIMEOUT = 5.0


class OpenAICompatible:
    """Calls `{api_base}/chat/completions` with the OpenAI wire format."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def complete(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        """POST a non-streaming request and return the parsed completion."""
        url, headers, content, timeout = _request(deployment, body)
        try:
            resp = await self._http.post(url, content=content, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, deployment) from exc
        if resp.status_code >= 400:
            raise _status_error(resp.status_code, resp.content, resp.headers, deployment)
        try:
            data = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise BackendProtocolError(
                f"{deployment.id} returned a body that is not JSON"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise BackendProtocolError(f"{deployment.id} returned no choices")
        return data

    async def stream(
        self, deployment: Deployment, body: dict[str, Any]
    ) -> AsyncIterator[list[Chunk]]:
        """POST a streaming request; yield the chunks of each network read together."""
        url, headers, content, timeout = _request(deployment, body)
        parser = SSEParser()
        try:
            async with self._http.stream(
                "POST", url, content=content, headers=headers, timeout=timeout
            ) as resp:
                if resp.status_code >= 400:
                    raw = await resp.aread()
                    raise _status_error(resp.status_code, raw, resp.headers, deployment)
                async for data in resp.aiter_raw():
                    chunks = parser.feed(data)
                    if chunks:
                        yield chunks
                    if parser.done:
                        return
        except httpx.HTTPError as exc:
            raise _transport_error(exc, deployment) from exc


def _request(
    deployment: Deployment, body: dict[str, Any]
) -> tuple[str, dict[str, str], bytes, httpx.Timeout]:
    headers = {"content-type": "application/json", "accept": "application/json"}
    if deployment.api_key:
        headers["authorization"] = f"Bearer {deployment.api_key}"
    if deployment.organization:
        headers["openai-organization"] = deployment.organization
    headers.update(deployment.extra_headers)
    read = deployment.stream_timeout if body.get("stream") else deployment.timeout
    timeout = httpx.Timeout(connect=_CONNECT_TIMEOUT, read=read, write=30.0, pool=30.0)
    return f"{deployment.api_base}/chat/completions", headers, orjson.dumps(body), timeout


def _transport_error(exc: httpx.HTTPError, deployment: Deployment) -> ProviderError:
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


def _status_error(
    status: int, raw: bytes, headers: httpx.Headers, deployment: Deployment
) -> ProviderError:
    message, code, param = _error_fields(raw)
    text = f"{deployment.id} returned {status}: {message}"
    retry_after = _retry_after(headers.get("retry-after"))
    if status >= 500:
        return BackendFailed(text, code=code, retry_after=retry_after)
    return BackendRejected(text, status=status, code=code, param=param, retry_after=retry_after)


def _error_fields(raw: bytes) -> tuple[str, str | None, str | None]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:300].decode("utf-8", "replace").strip() or "no details", None, None
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        message = str(error.get("message") or error.get("detail") or error)[:1000]
        code = error.get("code")
        param = error.get("param")
        return message, str(code) if code else None, str(param) if param else None
    return str(error)[:1000], None, None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(parsed.timestamp() - time.time(), 0.0) if parsed else None
