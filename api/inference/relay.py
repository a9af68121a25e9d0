"""Relaying a streamed answer as SSE: events out, cache and usage told how it ended.

`SSEResponse` is a plain ASGI response, not sse-starlette's EventSourceResponse: that one runs
an anyio task group of four tasks per stream and a cancel scope per send, which cost the API
about a third of its CPU per 64-token stream (README, "Layout and choices"). Here one task
writes the events; a second waits for the client to leave (which ends the stream and cancels
its job) and sends a comment line every `PING_INTERVAL` seconds (as sse-starlette did), so
proxies keep the connection open. On SIGTERM a stream in flight runs on under uvicorn's
graceful shutdown (`timeout_graceful_shutdown`, api/main.py), then is cut and its job
cancelled.
"""

import asyncio
from collections.abc import AsyncGenerator, Iterable
from typing import Protocol, runtime_checkable

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from inferq.api.errors import GatewayError, UpstreamError
from inferq.api.inference.flow import Started, next_reply, store_answer
from inferq.api.state import Gateway
from inferq.broker.errors import ReplyAborted
from inferq.broker.jobs.replies import ReplyStream
from inferq.broker.messages import Reply, ReplyKind

# Seconds between comment lines on an open stream (keeps idle proxies from closing it).
PING_INTERVAL = 15.0
_PING = b": ping\n\n"
_MEDIA_TYPE = "text/event-stream"
_SSE_HEADERS = {"cache-control": "no-store", "x-accel-buffering": "no"}


class StreamWriter(Protocol):
    """How a route writes a streamed answer as SSE events."""

    def deltas(self, reply: Reply) -> Iterable[bytes]:
        """Events for one DELTA reply."""
        ...

    def done(self, reply: Reply) -> Iterable[bytes]:
        """Events that end a successful stream."""
        ...

    def error(self, error: GatewayError) -> bytes:
        """The event that ends a failed stream."""
        ...


@runtime_checkable
class FinishingWriter(Protocol):
    """A writer with work to await before a successful stream's last events go out (the
    Responses API stores the response, so a client continuing from it at once finds it)."""

    async def finish(self, reply: Reply) -> None:
        """Called with the DONE reply, before `done`."""
        ...


def sse(gw: Gateway, started: Started, writer: StreamWriter) -> "SSEResponse":
    """The streamed answer as an SSE response."""
    return SSEResponse(_events(gw, started, writer), started.replies, started.headers())


class SSEResponse(StreamingResponse):
    """`events` as a `text/event-stream`; `replies` is aborted when the client leaves."""

    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        replies: ReplyStream,
        headers: dict[str, str],
        *,
        ping_interval: float = PING_INTERVAL,
    ) -> None:
        super().__init__(events, headers={**_SSE_HEADERS, **headers}, media_type=_MEDIA_TYPE)
        self._events = events
        self._replies = replies
        self._ping_interval = ping_interval

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.ensure_future(self._watch(receive, send))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self._events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            watcher.cancel()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client left while a send was under way (ASGI 2.4)
            pass
        finally:
            watcher.cancel()
            await self._events.aclose()

    async def _watch(self, receive: Receive, send: Send) -> None:
        """Abort the stream when the client leaves; ping it every `ping_interval` seconds."""
        while True:
            try:
                async with asyncio.timeout(self._ping_interval):
                    message = await receive()
            except TimeoutError:
                await send({"type": "http.response.body", "body": _PING, "more_body": True})
                continue
            if message["type"] == "http.disconnect":
                self._replies.abort("client disconnected")
                return


class _Outcome:
    """What a live stream's end means for the cache (store the answer or release the flight)
    and for usage (record how it ended), whichever way it ends."""

    def __init__(self, gw: Gateway, started: Started) -> None:
        self._gw = gw
        self._started = started
        cache = started.cache
        self._cache = cache if cache and cache.store and not started.hit else None
        self._deltas: list[Reply] = []
        self._last: Reply | None = None  # names the deployment a stream left midway was on
        self.ended = False

    def delta(self, reply: Reply) -> None:
        self._last = reply
        if self._started.tracker:
            self._started.tracker.first_output()
        if self._cache:
            self._deltas.append(reply)

    def done(self, reply: Reply) -> None:
        self.ended = True
        if self._cache:
            store_answer(self._gw, self._started.job, self._cache, self._deltas, reply)
        if self._started.tracker:
            self._started.tracker.done(reply, self._started.hit)

    def error(self, status: int, kind: str, reply: Reply | None = None) -> None:
        self.ended = True
        self._release()
        if self._started.tracker:
            self._started.tracker.failed(status, kind, reply)

    def abandoned(self) -> None:
        if not self.ended:
            self.error(499, "client_disconnected", self._last)

    def _release(self) -> None:
        if self._cache:
            job = self._started.job
            self._gw.background(
                self._gw.cache.end_flight(self._cache.digest, job.id, self._cache.namespace)
            )


async def _events(
    gw: Gateway, started: Started, writer: StreamWriter
) -> AsyncGenerator[bytes, None]:
    """SSE events until the terminal reply; a stream always ends in its end or an error."""
    job, replies, reply = started.job, started.replies, started.first
    outcome = _Outcome(gw, started)
    try:
        while True:
            # The events of one reply go out in one write (each send costs a syscall).
            if reply.kind is ReplyKind.DELTA:
                outcome.delta(reply)
                events = b"".join(writer.deltas(reply))
                if events:
                    yield events
            elif reply.kind is ReplyKind.DONE:
                outcome.done(reply)
                if isinstance(writer, FinishingWriter):
                    await writer.finish(reply)
                yield b"".join(writer.done(reply))
                return
            else:
                assert reply.error is not None
                e = reply.error
                outcome.error(e.status, e.type, reply)
                yield writer.error(
                    UpstreamError(e.message, status=e.status, type=e.type, code=e.code)
                )
                return
            try:
                reply = await next_reply(replies, job)
            except GatewayError as exc:
                outcome.error(exc.status, exc.type)
                yield writer.error(exc)
                return
            except ReplyAborted:
                return  # the client left: nobody to tell
    finally:
        outcome.abandoned()
        if reply.kind is not ReplyKind.DELTA:
            gw.dispatcher.close(job.id)
        elif not started.hit:
            gw.abandon(job.id)  # client gone, deadline passed or reply lost: free the worker
