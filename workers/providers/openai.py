"""OpenAI-compatible provider: OpenAI itself, llama.cpp's server, vLLM and friends."""

from collections.abc import AsyncIterator
from typing import Any

import orjson

from inferq.broker.messages import JobKind
from inferq.config import Deployment
from inferq.workers.errors import BackendProtocolError
from inferq.workers.providers.base import Chunk
from inferq.workers.providers.common import status_error
from inferq.workers.providers.sse import SSEParser
from inferq.workers.transport import BackendHTTP

_PATHS = {
    JobKind.CHAT: "/chat/completions",
    JobKind.COMPLETION: "/completions",
    JobKind.EMBEDDING: "/embeddings",
}
_RESULT_FIELD = {JobKind.CHAT: "choices", JobKind.COMPLETION: "choices", JobKind.EMBEDDING: "data"}


class OpenAICompatible:
    """Calls `{api_base}/chat/completions`, `/completions`, `/embeddings` in OpenAI's format."""

    def __init__(self, http: BackendHTTP) -> None:
        self._http = http

    async def complete(
        self, deployment: Deployment, kind: JobKind, body: dict[str, Any]
    ) -> dict[str, Any]:
        """POST a non-streaming request and return the parsed response."""
        url, headers, content = _request(deployment, kind, body)
        resp = await self._http.post(
            url, headers, content, read=deployment.timeout, backend=deployment.id
        )
        if resp.status >= 400:
            raise status_error(resp.status, resp.body, resp.headers, deployment)
        try:
            data = orjson.loads(resp.body)
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
        url, headers, content = _request(deployment, kind, body)
        parser = SSEParser()
        async with self._http.stream(
            url, headers, content, read=deployment.stream_timeout, backend=deployment.id
        ) as resp:
            if resp.status >= 400:
                raise status_error(resp.status, await resp.read(), resp.headers, deployment)
            async for data in resp:
                chunks = parser.feed(data)
                if chunks:
                    yield chunks
                if parser.done:
                    return


def _request(
    deployment: Deployment, kind: JobKind, body: dict[str, Any]
) -> tuple[str, dict[str, str], bytes]:
    headers = {"content-type": "application/json", "accept": "application/json"}
    if deployment.api_key:
        headers["authorization"] = f"Bearer {deployment.api_key}"
    if deployment.organization:
        headers["openai-organization"] = deployment.organization
    headers.update(deployment.extra_headers)
    return f"{deployment.api_base}{_PATHS[kind]}", headers, orjson.dumps(body)
