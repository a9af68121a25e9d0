"""The workers' httpx transport: httpx-aiohttp's (the aiohttp transport the openai SDK ships),
configured for a gateway and with aiohttp's errors mapped to the httpx errors providers
understand.

httpx's own connection pool spent 570 µs of CPU per backend call at concurrency 1 and 2 ms at
32 on this machine (it polls every pooled socket per request); aiohttp 60-160 µs. The
hand-written transport this module held before cost the same CPU as httpx-aiohttp's
(`python -m bench.transports`), so the maintained one is used. Its own error mapping is coarse
(a connection dropped mid-answer comes out as `ConnectTimeout`, and some aiohttp errors pass
unmapped), and the providers' retry and fallback policy reads these errors, so they are mapped
again here from their cause. Providers still take an `httpx.AsyncClient`, so tests can swap in
`httpx.MockTransport` or any other transport.
"""

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport as _LibraryTransport


class AiohttpTransport(_LibraryTransport):
    """httpx requests through one aiohttp session (its own keep-alive pool) of at most
    `max_connections` connections (0: no bound; the worker's slots bound its calls)."""

    def __init__(self, max_connections: int = 100) -> None:
        def session() -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(
                limit=max_connections, limit_per_host=max_connections, ttl_dns_cache=60
            )
            return aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,  # httpx decodes content-encoding itself
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                trust_env=False,
            )

        super().__init__(trust_env=False, client=session)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send the request; the body streams back lazily, its errors mapped too."""
        try:
            response = await super().handle_async_request(request)
        except Exception as exc:
            raise _map(exc, request) from exc
        response.stream = _MappedStream(response.stream, request)
        return response


class _MappedStream(httpx.AsyncByteStream):
    """The response body as it arrives, with errors mapped."""

    def __init__(self, stream: Any, request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except Exception as exc:
            raise _map(exc, self._request) from exc

    async def aclose(self) -> None:
        # An unfinished answer's connection is closed, not pooled (aiohttp's release does so).
        await self._stream.aclose()


# aiohttp's errors as the httpx errors providers already understand; first match wins.
_ERRORS: list[tuple[Any, type[httpx.RequestError]]] = [
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (TimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (aiohttp.ClientOSError, httpx.ReadError),
    (ConnectionError, httpx.ReadError),
    (aiohttp.ClientError, httpx.RemoteProtocolError),
]


def _map(exc: Exception, request: httpx.Request) -> Exception:
    # The library raises its own mapping `from` aiohttp's error: map that error instead.
    cause = exc.__cause__ if isinstance(exc, httpx.HTTPError) else exc
    if not isinstance(cause, Exception) or isinstance(cause, httpx.HTTPError):
        return exc
    for source, target in _ERRORS:
        if isinstance(cause, source):
            return target(str(cause) or type(cause).__name__, request=request)
    return exc
