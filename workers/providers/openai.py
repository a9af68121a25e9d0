"""OpenAI-compatible provider: OpenAI itself, llama.cpp's server, vLLM and friends (httpx)."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from inferq.broker.messages import JobKind
from inferq.config import Deployment
from inferq.workers.errors import BackendProtocolError
from inferq.workers.providers.base import Chunk
from inferq.workers.providers.common import status_error, transport_error
from inferq.workers.providers.sse import SSEParser

_CONNECT_TIMEOUT = 5.0


_PATHS = {
    JobKind.CHAT: "/chat/completions",
    JobKind.COMPLETION: "/completions",
    JobKind.EMBEDDING: "/embeddings",
}
_RESULT_FIELD = {JobKind.CHAT: "choices", JobKind.COMPLETION: "choices", JobKind.EMBEDDING: "data"}


class OpenAICompatible:
    """Calls `{api_base}/chat/completions`, `/completions`, `/embeddings` in OpenAI's format."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def complete(
        self, deployment: Deployment, kind: JobKind, body: dict[str, Any]
    ) -> dict[str, Any]:
        """POST a non-streaming request and return the parsed response."""
        url, headers, content, timeout = _request(deployment, kind, body)
        try:
            resp = await self._http.post(url, content=content, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            raise transport_error(exc, deployment) from exc
        if resp.status_code >= 400:
            raise status_error(resp.status_code, resp.content, resp.headers, deployment)
        try:
            data = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise BackendProtocolError(
                f"{deployment.id} returned a body that is not JSON"
            ) from None
        field = _RESULT_FIELD[kind]
        if not isinstance(data, dict) or not isinstance(data.get(field), list):
            raise BackendProtocolError(f"{deployment.id} returned no {field}")
        return data

    async def stream(
        self, deployment: Deployment, kind: JobKind, body: dict[str, Any]
    ) -> AsyncIterator[list[Chunk]]:
        """POST a streaming request; yield the chunks of each network read together."""
        url, headers, content, timeout = _request(deployment, kind, body)
        parser = SSEParser()
        try:
            async with self._http.stream(
                "POST", url, content=content, headers=headers, timeout=timeout
            ) as resp:
                if resp.status_code >= 400:
                    raw = await resp.aread()
                    raise status_error(resp.status_code, raw, resp.headers, deployment)
                async for data in resp.aiter_raw():
                    chunks = parser.feed(data)
                    if chunks:
                        yield chunks
                    if parser.done:
                        return
        except httpx.HTTPError as exc:
            raise transport_error(exc, deployment) from exc


def _request(
    deployment: Deployment, kind: JobKind, body: dict[str, Any]
) -> tuple[str, dict[str, str], bytes, httpx.Timeout]:
    headers = {"content-type": "application/json", "accept": "application/json"}
    if deployment.api_key:
        headers["authorization"] = f"Bearer {deployment.api_key}"
    if deployment.organization:
        headers["openai-organization"] = deployment.organization
    headers.update(deployment.extra_headers)
    read = deployment.stream_timeout if body.get("stream") else deployment.timeout
    timeout = httpx.Timeout(connect=_CONNECT_TIMEOUT, read=read, write=30.0, pool=30.0)
    return f"{deployment.api_base}{_PATHS[kind]}", headers, orjson.dumps(body), timeout
