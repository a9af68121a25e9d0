"""A fake OpenAI-compatible backend: a real HTTP/1.1 server on loopback, scriptable by tests.

It answers `POST /v1/chat/completions` (stream or not) with `tokens` words, records every request
body, and can be told to fail. Run it alone for the benchmark:
`python -m tests.support.fake_backend --port 9100 --tokens 64`.
"""

import argparse
import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.support import wire


@dataclass
class Behaviour:
    """What the next requests get; tests change it between calls."""

    tokens: int | None = None  # words per answer (default: max_tokens, else 8)
    usage_in_stream: bool = True  # False acts like llama.cpp: no usage chunk
    status: int = 200  # non-200: answer with this status and an OpenAI error body
    fail_first: int = 0  # with `status`: only the first N requests fail, then all succeed
    hang_first: int = 0  # the first N requests get no answer at all
    token_delay: float = 0.0  # seconds between streamed tokens
    first_token_delay: float = 0.0
    drop_after: int | None = None  # close the connection after N streamed tokens
    no_finish: bool = False  # end the stream without finish_reason and [DONE]
    retry_after: str | None = None
    per_token_embeddings: bool = False  # answer like llama.cpp does for SmolLM2
    complete_delay: float = 0.0  # seconds a non-stream chat answer takes (a slow generation)
    # Hold the first chat stream forever at one point, so a test can kill the worker reading it
    # at a chosen moment: after `hold_at` words (0: before the first), or after the finish chunk
    # (before the usage chunk and [DONE]). `FakeBackend.held` counts streams held so far.
    hold_at: int | None = None
    hold_after_finish: bool = False
    # Carry on an answer like a model does: given an assistant prefix of k words, answer from
    # word k on (and only the finish when nothing is left), instead of starting again at w0.
    continues: bool = False
    finish_reason: str = "stop"  # of a chat answer ("length": cut at the token limit)


@dataclass
class FakeBackend:
    """The server; `requests` holds every parsed request body, in order."""

    host: str = "127.0.0.1"
    port: int = 0
    behaviour: Behaviour = field(default_factory=Behaviour)
    requests: list[dict[str, Any]] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    aborted: int = 0  # streams whose reader went away before the end
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    headers: list[dict[str, str]] = field(default_factory=list)  # of each request, in order
    held: int = 0  # streams held by `Behaviour.hold_at` / `hold_after_finish`

    async def serve(self) -> asyncio.Server:
        """Start listening; returns the asyncio server."""
        # A deep accept queue: the streams benchmark opens thousands of connections at once.
        server = await asyncio.start_server(self._connection, self.host, self.port, backlog=4096)
        self.port = server.sockets[0].getsockname()[1]
        return server

    @property
    def api_base(self) -> str:
        """Base URL for an `openai/...` deployment."""
        return f"http://{self.host}:{self.port}/v1"

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers: dict[str, str] = {}
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name:
                        headers[name.strip().lower().decode()] = value.strip().decode()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                path = head.split(b" ", 2)[1]
                keep = await self._handle(path, body, writer, headers)
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the peer left, or the test is stopping the server
        finally:
            self.writers.discard(writer)
            writer.close()

    async def _handle(
        self, path: bytes, raw: bytes, writer: asyncio.StreamWriter, headers: dict[str, str]
    ) -> bool:
        known = (
            b"/chat/completions",
            b"/completions",
            b"/embeddings",
            b"/v1/messages",
            b"/v1/messages/count_tokens",
        )
        if not path.endswith(known):
            error = {"message": "not found", "type": "invalid_request_error"}
            _respond(writer, 404, {"error": error})
            return True
        body = orjson.loads(raw) if raw else {}
        self.requests.append(body)
        self.headers.append(headers)
        b = self.behaviour
        call = len(self.requests)
        if b.hang_first and call <= b.hang_first:
            await asyncio.sleep(3600)
        anthropic = path.endswith(b"/v1/messages")
        if b.status != 200 and (not b.fail_first or call <= b.fail_first):
            extra = {"retry-after": b.retry_after} if b.retry_after else {}
            if anthropic:
                failure = {"type": "overloaded_error", "message": f"fake failure {b.status}"}
                _respond(writer, b.status, {"type": "error", "error": failure}, extra)
            else:
                error = {
                    "message": f"fake failure {b.status}",
                    "type": "server_error",
                    "code": None,
                }
                _respond(writer, b.status, {"error": error}, extra)
            return True
        words = _words(body, b)
        other = self._other_dialects(path, body, words, writer)
        if other is not None:
            await writer.drain()
            return other
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if body.get("stream"):
                try:
                    return await self._stream(body, words, writer)
                except ConnectionError:
                    self.aborted += 1
                    raise
            if b.first_token_delay or b.complete_delay:
                await asyncio.sleep(b.first_token_delay + b.complete_delay)
            _respond(writer, 200, _completion(body, words, b.finish_reason))
            return True
        finally:
            self.active -= 1

    def _other_dialects(
        self, path: bytes, body: dict[str, Any], words: list[str], writer: asyncio.StreamWriter
    ) -> bool | None:
        """Anthropic messages, tool calls, text completions, embeddings (no fault behaviours)."""
        stream = bool(body.get("stream"))
        counting = path.endswith(b"/count_tokens")
        if path.endswith(b"/v1/messages") or counting:
            if counting or not stream:
                answer = (
                    wire.anthropic_count(body) if counting else wire.anthropic_message(body, words)
                )
                _respond(writer, 200, answer)
                return True
            _start_chunked(writer)
            for event in wire.anthropic_events(body, words):
                _chunk(writer, event)
        elif path.endswith(b"/embeddings"):
            _respond(writer, 200, wire.embeddings(body, self.behaviour.per_token_embeddings))
            return True
        elif path.endswith(b"/chat/completions") and body.get("tools") and not _tool_ran(body):
            if not stream:
                _respond(writer, 200, wire.openai_tool_call(body))
                return True
            _start_chunked(writer)
            for chunk in wire.openai_tool_call_chunks(body):
                _event(writer, chunk)
            _chunk(writer, b"data: [DONE]\n\n")
        elif not path.endswith(b"/chat/completions"):
            if not stream:
                _respond(writer, 200, wire.text_completion(body, words))
                return True
            _start_chunked(writer)
            for chunk in wire.text_completion_chunks(words):
                _event(writer, chunk)
            _chunk(writer, b"data: [DONE]\n\n")
        else:
            return None
        writer.write(b"0\r\n\r\n")
        return True

    async def _stream(
        self, body: dict[str, Any], words: list[str], writer: asyncio.StreamWriter
    ) -> bool:
        b = self.behaviour
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
        }
        _event(
            writer,
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
            },
        )
        if b.first_token_delay:
            await writer.drain()
            await asyncio.sleep(b.first_token_delay)
        for i, word in enumerate(words):
            if i == b.hold_at:
                await self._hold(writer)
            if b.drop_after is not None and i == b.drop_after:
                await writer.drain()
                writer.transport.abort()
                return False
            _event(
                writer,
                {
                    **base,
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
                },
            )
            if b.token_delay:
                await writer.drain()
                await asyncio.sleep(b.token_delay)
        if b.hold_at is not None and b.hold_at >= len(words):
            await self._hold(writer)
        if not b.no_finish:
            _event(
                writer,
                {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": b.finish_reason}]},
            )
            if b.hold_after_finish:
                await self._hold(writer)
            wants_usage = (body.get("stream_options") or {}).get("include_usage")
            if b.usage_in_stream and wants_usage:
                _event(writer, {**base, "choices": [], "usage": _usage(body, words)})
            _chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _hold(self, writer: asyncio.StreamWriter) -> None:
        """Send what is written, then stop answering (the first held stream only)."""
        if self.held:
            return
        await writer.drain()
        self.held += 1
        await asyncio.sleep(3600)


def _words(body: dict[str, Any], b: Behaviour) -> list[str]:
    """The answer: `tokens` words (default: max_tokens, else 8), `w0 w1 ...`."""
    limit = body.get("max_tokens")
    start = 0
    messages = body.get("messages") or []
    if b.continues and messages and messages[-1].get("role") == "assistant":
        start = len(str(messages[-1].get("content") or "").split())
    if b.tokens:
        end = b.tokens if not b.continues or not limit else min(b.tokens, start + limit)
    else:
        end = start + (limit or 8)
    return [f"w{i} " for i in range(start, end)]


def _tool_ran(body: dict[str, Any]) -> bool:
    """The conversation ends in a tool's result: a model answers it in text, as an agent
    loop needs to end."""
    messages = body.get("messages") or [{}]
    return isinstance(messages[-1], dict) and messages[-1].get("role") == "tool"


def _usage(body: dict[str, Any], words: list[str]) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", [])) + 3
    return {
        "prompt_tokens": prompt,
        "completion_tokens": len(words),
        "total_tokens": prompt + len(words),
    }


def _completion(body: dict[str, Any], words: list[str], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(words)},
                "finish_reason": finish,
            }
        ],
        "usage": _usage(body, words),
    }


def _respond(
    writer: asyncio.StreamWriter, status: int, payload: Any, headers: dict[str, str] | None = None
) -> None:
    data = orjson.dumps(payload)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
    head += f"content-length: {len(data)}\r\n{extra}\r\n"
    writer.write(head.encode() + data)


def _start_chunked(writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )


def _event(writer: asyncio.StreamWriter, payload: dict[str, Any]) -> None:
    _chunk(writer, b"data: " + orjson.dumps(payload) + b"\n\n")


def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))


class BackendThread:
    """Runs a FakeBackend on its own event loop in a daemon thread (for tests)."""

    def __init__(self) -> None:
        self.backend = FakeBackend()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> FakeBackend:
        self._thread.start()
        self._ready.wait(5)
        return self.backend

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(self.backend.serve())
        self._ready.set()
        self._loop.run_forever()
        server.close()
        for writer in list(self.backend.writers):
            writer.transport.abort()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--tokens", type=int, default=None)
    parser.add_argument(
        "--complete-delay", type=float, default=0.0, help="seconds a non-stream answer takes"
    )
    parser.add_argument(
        "--first-token-delay", type=float, default=0.0, help="seconds before a stream's first word"
    )
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between words")
    args = parser.parse_args()

    async def run() -> None:
        behaviour = Behaviour(
            tokens=args.tokens,
            complete_delay=args.complete_delay,
            first_token_delay=args.first_token_delay,
            token_delay=args.token_delay,
        )
        backend = FakeBackend(port=args.port, behaviour=behaviour)
        server = await backend.serve()
        print(f"fake backend on {backend.api_base}", flush=True)
        backend.requests = _Discard()  # type: ignore[assignment]  # the benchmark keeps no history
        await server.serve_forever()

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())


class _Discard(list):  # type: ignore[type-arg]
    def append(self, _item: Any) -> None:
        pass


if __name__ == "__main__":
    main()
