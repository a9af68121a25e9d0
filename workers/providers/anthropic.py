"""Anthropic provider: the Messages API (translation in `anthropic_wire`)."""

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from inferq.broker.messages import JobKind
from inferq.config import Deployment
from inferq.workers.errors import (
    BackendFailed,
    BackendProtocolError,
    BackendRejected,
    ProviderError,
)
from inferq.workers.providers.anthropic_wire import (
    StreamTranslator,
    to_completion,
    to_messages_request,
)
from inferq.workers.providers.base import Chunk
from inferq.workers.providers.common import error_fields, retry_after, status_error
from inferq.workers.providers.sse import SSEParser
from inferq.workers.transport import BackendHTTP

API_VERSION = "2023-06-01"


class AnthropicProvider:
    """Calls `{api_base}/v1/messages`."""

    def __init__(self, http: BackendHTTP) -> None:
        self._http = http

    async def complete(
        self, deployment: Deployment, kind: JobKind, body: dict[str, Any]
    ) -> dict[str, Any]:
        """A non-streaming Messages call, returned as an OpenAI `chat.completion`."""
        url, headers, content = _request(deployment, kind, body, stream=False)
        resp = await self._http.post(
            url, headers, content, read=deployment.timeout, backend=deployment.id
        )
        if resp.status >= 400:
            raise _anthropic_error(resp.status, resp.body, resp.headers, deployment)
        try:
            message = orjson.loads(resp.body)
        except orjson.JSONDecodeError:
            raise BackendProtocolError(
                f"{deployment.id} returned a body that is not JSON"
            ) from None
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise BackendProtocolError(f"{deployment.id} returned no content")
        return to_completion(message)

    async def stream(
        self, deployment: Deployment, kind: JobKind, body: dict[str, Any]
    ) -> AsyncIterator[list[Chunk]]:
        """A streaming Messages call; events become OpenAI chunks, per network read."""
        url, headers, content = _request(deployment, kind, body, stream=True)
        parser = SSEParser(raw_errors=True)
        events = StreamTranslator()
        async with self._http.stream(
            url, headers, content, read=deployment.stream_timeout, backend=deployment.id
        ) as resp:
            if resp.status >= 400:
                raise _anthropic_error(resp.status, await resp.read(), resp.headers, deployment)
            async for data in resp:
                chunks = [c for e in parser.feed(data) for c in events.feed(e, deployment)]
                if chunks:
                    yield chunks
                if events.done:
                    return

    async def count_tokens(self, deployment: Deployment, body: dict[str, Any]) -> int:
        """Anthropic's `POST /v1/messages/count_tokens` for an OpenAI chat request body."""
        url, headers, _content = _request(deployment, JobKind.CHAT, body, stream=False)
        full = to_messages_request(body, deployment.upstream_model, stream=False)
        payload = {k: v for k, v in full.items() if k in _COUNTED}
        resp = await self._http.post(
            url + "/count_tokens", headers, orjson.dumps(payload), read=deployment.timeout,
            backend=deployment.id,
        )  # fmt: skip
        if resp.status >= 400:
            raise _anthropic_error(resp.status, resp.body, resp.headers, deployment)
        try:
            count = orjson.loads(resp.body).get("input_tokens")
        except (orjson.JSONDecodeError, AttributeError):
            count = None
        if not isinstance(count, int):
            raise BackendProtocolError(f"{deployment.id} returned no input_tokens count")
        return count


# The fields of a Messages request that count_tokens takes (it refuses max_tokens, stream...).
_COUNTED = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking"})


def _request(
    deployment: Deployment, kind: JobKind, body: dict[str, Any], *, stream: bool
) -> tuple[str, dict[str, str], bytes]:
    if kind is not JobKind.CHAT:
        raise BackendRejected(
            f"{deployment.id} is an Anthropic deployment: it serves chat, not {kind.value}",
            status=400,
        )
    headers = {
        "content-type": "application/json",
        "anthropic-version": API_VERSION,
        "x-api-key": deployment.api_key or "",
    }
    headers.update(deployment.extra_headers)
    payload = to_messages_request(body, deployment.upstream_model, stream=stream)
    return f"{deployment.api_base}/v1/messages", headers, orjson.dumps(payload)


def _anthropic_error(
    status: int, raw: bytes, headers: Mapping[str, str], deployment: Deployment
) -> ProviderError:
    if status == 529:  # overloaded: Anthropic's own code, always worth a retry
        message, code, _param = error_fields(raw)
        return BackendFailed(
            f"{deployment.id} is overloaded (529): {message}",
            status=503,
            code=code or "overloaded_error",
            retry_after=retry_after(headers.get("retry-after")),
        )
    return status_error(status, raw, headers, deployment)
