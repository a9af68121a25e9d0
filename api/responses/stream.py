"""The Responses API's event stream, written from a chat job's streamed replies.

Events follow OpenAI's order: `response.created`, `response.in_progress`; per output item
`response.output_item.added`, then for a message `response.content_part.added`,
`response.output_text.delta`… `response.output_text.done`, `response.content_part.done`, or for
a function call `response.function_call_arguments.delta`… `.done`; `response.output_item.done`;
and last `response.completed` with usage. Every event carries a `sequence_number`.
"""

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from inferq.api.errors import GatewayError
from inferq.api.responses.output import call_item, message_item, response_object, text_part
from inferq.api.responses.request import ResponsesRequest
from inferq.broker.messages import Job, Reply

# Called with the completed Response object before `response.completed` goes out, so a client
# that continues from it at once finds it stored.
Finisher = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class _Call:
    """A function call being streamed: its output slot and what has arrived so far."""

    output_index: int
    item: dict[str, Any]


class ResponsesStream:
    """SSE events for one streamed Response."""

    def __init__(self, job: Job, req: ResponsesRequest, finisher: Finisher | None = None) -> None:
        self._job = job
        self._req = req
        self._finisher = finisher
        self._seq = 0
        self._started = False
        self._output: list[dict[str, Any]] = []  # items, in output_index order
        self._text: int | None = None  # output index of the open message item
        self._calls: dict[int, _Call] = {}  # by the chat stream's tool call index
        self._open_call: int | None = None
        self._finish: str | None = None
        self._closing: list[bytes] | None = None

    def _event(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **data}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _start(self) -> Iterable[bytes]:
        if not self._started:
            self._started = True
            response = response_object(self._job, self._req, [], status="in_progress")
            yield self._event("response.created", response=response)
            yield self._event("response.in_progress", response=response)

    def deltas(self, reply: Reply) -> Iterable[bytes]:
        """Events for one batch of chat chunks (choice 0: a Response has one answer)."""
        yield from self._start()
        for choices in reply.chunks or ():
            for choice in choices:
                if choice.get("index", 0) == 0:
                    yield from self._choice(choice)

    def _choice(self, choice: dict[str, Any]) -> Iterable[bytes]:
        delta = choice.get("delta") or {}
        if delta.get("content"):
            yield from self._text_delta(str(delta["content"]))
        for call in delta.get("tool_calls") or []:
            yield from self._call_delta(call)
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]

    def _text_delta(self, text: str) -> Iterable[bytes]:
        if self._text is None:
            yield from self._close_call()
            self._text = len(self._output)
            item = message_item(self._job, "", status="in_progress")
            self._output.append(item)
            yield self._event("response.output_item.added", output_index=self._text, item=item)
            yield self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=self._text,
                content_index=0,
                part=text_part(""),
            )
        item = self._output[self._text]
        item["text"] = item.get("text", "") + text
        yield self._event(
            "response.output_text.delta",
            item_id=item["id"],
            output_index=self._text,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _close_text(self) -> Iterable[bytes]:
        if self._text is None:
            return
        index, self._text = self._text, None
        item = self._output[index]
        text = item.pop("text", "")
        yield self._event(
            "response.output_text.done",
            item_id=item["id"],
            output_index=index,
            content_index=0,
            text=text,
            logprobs=[],
        )
        yield self._event(
            "response.content_part.done",
            item_id=item["id"],
            output_index=index,
            content_index=0,
            part=text_part(text),
        )
        self._output[index] = done = message_item(self._job, text)
        yield self._event("response.output_item.done", output_index=index, item=done)

    def _call_delta(self, call: dict[str, Any]) -> Iterable[bytes]:
        index = int(call.get("index", 0))
        function = call.get("function") or {}
        if index not in self._calls:
            yield from self._close_text()
            yield from self._close_call()
            output_index = len(self._output)
            call_id = str(call.get("id") or f"call_{self._job.id}_{index}")
            item = call_item(
                self._job, index, call_id, str(function.get("name") or ""), "", status="in_progress"
            )
            self._output.append(item)
            self._calls[index] = _Call(output_index, item)
            self._open_call = index
            yield self._event("response.output_item.added", output_index=output_index, item=item)
        found = self._calls[index]
        if function.get("name") and not found.item["name"]:
            found.item["name"] = str(function["name"])
        if function.get("arguments"):
            found.item["arguments"] += function["arguments"]
            yield self._event(
                "response.function_call_arguments.delta",
                item_id=found.item["id"],
                output_index=found.output_index,
                delta=function["arguments"],
            )

    def _close_call(self) -> Iterable[bytes]:
        if self._open_call is None:
            return
        found = self._calls[self._open_call]
        self._open_call = None
        item = found.item
        yield self._event(
            "response.function_call_arguments.done",
            item_id=item["id"],
            output_index=found.output_index,
            name=item["name"],
            arguments=item["arguments"],
        )
        item["status"] = "completed"
        yield self._event("response.output_item.done", output_index=found.output_index, item=item)

    async def finish(self, reply: Reply) -> None:
        """Close the open items and build the completed Response; hand it to the finisher."""
        events = [*self._start(), *self._close_text(), *self._close_call()]
        response = response_object(
            self._job, self._req, self._output, status="completed", finish=self._finish, reply=reply
        )
        events.append(self._event(f"response.{response['status']}", response=response))
        self._closing = events
        if self._finisher is not None:
            await self._finisher(response)

    def done(self, reply: Reply) -> Iterable[bytes]:
        """The closing events `finish` prepared."""
        return self._closing if self._closing is not None else []

    def error(self, error: GatewayError) -> bytes:
        """OpenAI's `error` event."""
        return self._event(
            "error", code=error.code or error.type, message=error.message, param=error.param
        )
