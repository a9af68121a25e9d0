"""The SSE response itself: a silent stream is pinged, a client that leaves ends the stream."""

import asyncio
from collections.abc import AsyncGenerator

from starlette.types import Message

from inferq.api.inference.relay import SSEResponse
from inferq.broker.errors import ReplyAborted
from inferq.broker.jobs.replies import ReplyStream

SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}


async def test_a_silent_stream_is_pinged_and_its_events_follow() -> None:
    async def events() -> AsyncGenerator[bytes, None]:
        await asyncio.sleep(0.35)  # a backend slow to its first token
        yield b"data: 1\n\n"

    gone = asyncio.Event()
    sent: list[Message] = []

    async def receive() -> Message:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    response = SSEResponse(events(), ReplyStream("j"), {"x-request-id": "r"}, ping_interval=0.1)
    await response(SCOPE, receive, send)
    start, *bodies = sent
    assert start["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    body = b"".join(m["body"] for m in bodies)
    assert body.startswith(b": ping\n\n") and body.endswith(b"data: 1\n\n")
    assert bodies[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_a_client_that_leaves_ends_the_stream() -> None:
    replies = ReplyStream("j")
    ended = asyncio.Event()

    async def events() -> AsyncGenerator[bytes, None]:
        try:
            yield b"data: 1\n\n"
            await replies.next()  # the next reply never comes: only the abort ends this wait
        except ReplyAborted:
            return
        finally:
            ended.set()

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        pass

    await asyncio.wait_for(SSEResponse(events(), replies, {})(SCOPE, receive, send), 5)
    assert ended.is_set()
