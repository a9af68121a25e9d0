"""The workers' HTTP client for backends: one aiohttp session, its errors mapped once.

Providers send bytes they built themselves and read bytes back; nothing else sits between them
and aiohttp. Measured on this machine (`python -m bench.transports`, the caller on its own
core, c=32): httpx's `AsyncClient` on an aiohttp transport spent about 230 µs of CPU per
non-stream call, aiohttp alone about 70 (httpx's request building, URL merging, header and
cookie handling were the difference); httpx's own pool spent 570 µs at c=1 and 2 ms at c=32.
"""

import contextlib
import functools
from collections.abc import AsyncIterator, Mapping
from typing import NamedTuple

import aiohttp

from inferq.workers.errors import (
    BackendProtocolError,
    BackendTimeout,
    BackendUnreachable,
    ProviderError,
)

CONNECT_TIMEOUT = 5.0


class Answer(NamedTuple):
    """A backend's whole answer to a non-streaming call."""

    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes


class Streamed:
    """A backend's answer while it streams: status and headers now, then (iterated) its body
    as it arrives, one item per network read."""

    __slots__ = ("_backend", "_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse, backend: str) -> None:
        self._response = response
        self._backend = backend
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        """The rest of the body (an error's, which is short)."""
        try:
            return await self._response.read()
        except Exception as exc:
            raise _mapped(exc, self._backend) from exc

    def __aiter__(self) -> "Streamed":
        return self

    async def __anext__(self) -> bytes:
        """The body, one item per network read (a class, not a generator: one left unfinished
        costs nothing to drop)."""
        try:
            chunk = await self._response.content.readany()
        except Exception as exc:
            raise _mapped(exc, self._backend) from exc
        if not chunk:
            raise StopAsyncIteration
        return chunk


class BackendHTTP:
    """POSTs to backends over one aiohttp session (its own keep-alive pool); every failure
    below HTTP comes out as a `ProviderError` naming `backend`."""

    def __init__(self, max_connections: int = 100) -> None:
        self._max_connections = max_connections  # 0: no bound (the worker's slots bound it)
        self._session: aiohttp.ClientSession | None = None

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, read: float | None,
        backend: str,
    ) -> Answer:  # fmt: skip
        """Send `body` and read the whole answer; `read` bounds each wait for data."""
        try:
            response = await self._send(url, headers, body, read)
            async with response:
                return Answer(response.status, response.headers, await response.read())
        except Exception as exc:
            raise _mapped(exc, backend) from exc

    @contextlib.asynccontextmanager
    async def stream(
        self, url: str, headers: Mapping[str, str], body: bytes, *, read: float | None,
        backend: str,
    ) -> AsyncIterator[Streamed]:  # fmt: skip
        """Send `body`; the answer streams in while the `async with` lasts."""
        try:
            response = await self._send(url, headers, body, read)
        except Exception as exc:
            raise _mapped(exc, backend) from exc
        try:
            yield Streamed(response, backend)
        finally:
            # Reading the rest would wait for a backend we no longer care about: drop the
            # connection instead unless the body was read to its end.
            if response.content.at_eof():
                response.release()
            else:
                response.close()

    async def aclose(self) -> None:
        """Close every pooled connection."""
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> "BackendHTTP":
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def _send(
        self, url: str, headers: Mapping[str, str], body: bytes, read: float | None
    ) -> aiohttp.ClientResponse:
        return await self._get_session().post(
            url, data=body, headers=headers, timeout=_timeout(read), allow_redirects=False
        )

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            limit = self._max_connections
            connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(
                connector=connector,
                # No Accept-Encoding: answers come uncompressed, which costs no CPU to read (one
                # a server compresses anyway is still decoded).
                skip_auto_headers=("Accept-Encoding",),
                headers={"user-agent": "inferq"},
                trust_env=False,
            )
        return self._session


@functools.lru_cache(maxsize=64)
def _timeout(read: float | None) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=read)


# aiohttp's errors as the provider errors the retry and fallback policy reads; first match wins.
_ERRORS: list[tuple[type[BaseException], type[ProviderError], str]] = [
    (aiohttp.ConnectionTimeoutError, BackendUnreachable, "timed out connecting to the backend"),
    (TimeoutError, BackendTimeout, "the backend did not answer in time"),
    (aiohttp.ClientConnectorError, BackendUnreachable, "cannot connect to the backend"),
    (aiohttp.InvalidURL, BackendUnreachable, "the backend's URL is not valid"),
    (aiohttp.ClientError, BackendProtocolError, "the backend dropped the connection mid-response"),
    (ConnectionError, BackendProtocolError, "the backend dropped the connection mid-response"),
]


def _mapped(exc: Exception, backend: str) -> Exception:
    if isinstance(exc, ProviderError):
        return exc
    for source, target, text in _ERRORS:
        if isinstance(exc, source):
            return target(f"{backend}: {text}")
    return exc
