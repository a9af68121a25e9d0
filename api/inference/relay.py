"""Relaying a streamed answer as SSE: events out, cache and usage told how it ended."""

from collections.abc import AsyncIterator, Iterable
from typing import Protocol, runtime_checkable

import anyio
from sse_starlette import EventSourceResponse

from inferq.api.errors import GatewayError, UpstreamError
from inferq.api.inference.flow import Started, next_reply, store_answer
from inferq.api.state import Gateway
from inferq.broker.messages import Reply, ReplyKind

# Seconds streams in flight may run on after SIGTERM (uvicorn's own limit is 30).
SHUTDOWN_GRACE = 25.0


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


def sse(gw: Gateway, started: Started, writer: StreamWriter) -> EventSourceResponse:
    """The streamed answer as an SSE response."""
    return EventSourceResponse(
        _events(gw, started, writer),
        headers=started.headers(),
        ping=15,
        sep="\n",
        # On SIGTERM, streams in flight get this long to finish before they are cut.
        shutdown_event=anyio.Event(),
        shutdown_grace_period=SHUTDOWN_GRACE,
    )


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


async def _events(gw: Gateway, started: Started, writer: StreamWriter) -> AsyncIterator[bytes]:
    """SSE events until the terminal reply; a stream always ends in its end or an error."""
    job, replies, reply = started.job, started.replies, started.first
    outcome = _Outcome(gw, started)
    try:
        while True:
            # The events of one reply go out in one write (each send costs a syscall and,
            # in sse-starlette, a cancel scope).
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
    finally:
        outcome.abandoned()
        if reply.kind is not ReplyKind.DELTA:
            gw.dispatcher.close(job.id)
        elif not started.hit:
            gw.abandon(job.id)  # client gone, deadline passed or reply lost: free the worker
