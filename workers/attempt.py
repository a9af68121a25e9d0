"""One attempt of a job on one deployment: build the backend request, relay what comes back.

Raises `ProviderError` for anything the backend did wrong (including no first token within
`stream_timeout`, and the job's deadline passing, as `BackendTimeout`).
"""

import asyncio
import math
import time
from typing import Any, Literal

from inferq.broker.jobs.consumer import GroupConsumer
from inferq.broker.messages import Job, JobKind, Reply, ReplyKind
from inferq.config import Deployment
from inferq.workers.coalesce import Coalescer
from inferq.workers.errors import BackendProtocolError, BackendTimeout, ProviderError
from inferq.workers.providers import Provider
from inferq.workers.providers.base import TokenCounter
from inferq.workers.usage import counted_usage, estimate_prompt_tokens, with_earlier_tokens

# Fields a client may send that are for the gateway, not the backend.
_GATEWAY_FIELDS = frozenset({"stream_options"})
# Config defaults that make sense for chat only (a text completion would be refused).
_CHAT_ONLY = frozenset({"tools", "tool_choice", "parallel_tool_calls", "response_format"})


class ReplyWriter:
    """Numbers and sends one job's reply messages, continuing the job's sequence."""

    def __init__(self, consumer: GroupConsumer, job: Job, deployment: str) -> None:
        self._consumer = consumer
        self._job = job
        self._deployment = deployment
        self.seq = job.seq
        self.text = ""  # assistant text (choice 0) the client received in this attempt
        self.tokens = 0  # backend chunks with output sent in this attempt (≈ tokens)
        self.tool_output = False  # a tool call went out: it cannot be continued elsewhere
        self._ends = Ends()  # the choices and finish_reasons the client received

    @property
    def visible(self) -> bool:
        """True once the client has received output from this attempt."""
        return self.seq > self._job.seq

    @property
    def finish_reason(self) -> str | None:
        """The answer's finish_reason once the client has received it (for every choice): from
        then on nothing but the terminal message is due."""
        return self._job.finish_reason or self._ends.finish_reason

    def reply(self, kind: ReplyKind, **fields: Any) -> Reply:
        """The next message of the job's sequence. Built without validation: every field comes
        from this worker (the API validates what it receives)."""
        reply = Reply.model_construct(
            job=self._job.id,
            seq=self.seq,
            kind=kind,
            group=self._job.group,
            deployment=self._deployment,
            attempts=len(self._job.attempts) + 1,
            **fields,
        )
        self.seq += 1
        return reply

    async def delta(self, chunks: list[list[dict[str, Any]]], tokens: int = 0) -> None:
        """Send coalesced chunks (holding `tokens` output tokens) to the waiting client."""
        self.tokens += tokens
        if not self._job.reply_to:
            return
        reply = self.reply(ReplyKind.DELTA, chunks=chunks, tokens=tokens)
        await self._consumer.publish(self._job, reply)
        self.text += chunks_text(chunks)
        self._ends.add(chunks)
        if any((c.get("delta") or {}).get("tool_calls") for choices in chunks for c in choices):
            self.tool_output = True


def chunks_text(chunks: list[list[dict[str, Any]]]) -> str:
    """The assistant text (choice 0) that streamed chunks add: `delta.content` (chat) or
    `text` (completions)."""
    parts = []
    for choices in chunks:
        for choice in choices:
            if choice.get("index", 0) != 0:
                continue
            if "delta" in choice:
                parts.append(str((choice.get("delta") or {}).get("content") or ""))
            else:
                parts.append(str(choice.get("text") or ""))
    return "".join(parts)


class Ends:
    """Which choices a client has seen and which of them have finished."""

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._finished: dict[int, str] = {}

    def add(self, chunks: list[list[dict[str, Any]]]) -> None:
        """Take the chunks of one DELTA message."""
        for choices in chunks:
            for choice in choices:
                index = int(choice.get("index", 0))
                self._seen.add(index)
                if choice.get("finish_reason"):
                    self._finished[index] = str(choice["finish_reason"])

    @property
    def finish_reason(self) -> str | None:
        """Choice 0's finish_reason once every choice seen has one, else None."""
        if not self._seen or not self._seen <= self._finished.keys():
            return None
        return self._finished.get(0) or next(iter(self._finished.values()))


def carried_on(job: Job, *, seq: int, text: str, tokens: int, **changes: Any) -> Job:
    """`job` to go on elsewhere after its client received `text` (about `tokens` tokens) in
    reply messages numbered up to `seq - 1`: the next holder continues the sequence and the
    answer, and is asked only for the tokens still due."""
    carry = {"seq": seq, "prefix": job.prefix + text, "prefix_tokens": job.prefix_tokens + tokens}
    return job.model_copy(update={**carry, **changes})


def resumed(job: Job, sent: list[Reply]) -> Job:
    """`job` carried on after the messages `sent`, recorded by a holder that died."""
    text = "".join(chunks_text(r.chunks or []) for r in sent)
    ends = Ends()
    for reply in sent:
        ends.add(reply.chunks or [])
    tokens = sum(r.tokens or 0 for r in sent)
    finish = job.finish_reason or ends.finish_reason
    return carried_on(job, seq=sent[-1].seq + 1, text=text, tokens=tokens, finish_reason=finish)


def token_limit(job: Job, deployment: Deployment) -> int | None:
    """The answer's max_tokens (the client's, else the deployment's default), if any."""
    for field in ("max_tokens", "max_completion_tokens"):
        for source in (job.body, deployment.defaults):
            value = source.get(field)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def backend_body(job: Job, deployment: Deployment) -> dict[str, Any]:
    """The request for the backend: config defaults, overridden by what the client sent."""
    sent = {k: v for k, v in job.body.items() if v is not None and k not in _GATEWAY_FIELDS}
    if job.kind is JobKind.EMBEDDING:
        return {**sent, "model": deployment.upstream_model}  # sampling defaults do not apply
    body = dict(deployment.defaults)
    if job.kind is JobKind.COMPLETION:
        body = {k: v for k, v in body.items() if k not in _CHAT_ONLY}
    body.update(sent)
    body["model"] = deployment.upstream_model
    if job.prefix:
        # Carrying on after another deployment failed mid-answer: ask only for what is left
        # (never 0 tokens: `run_attempt` does not call the backend when nothing is left).
        for field in ("max_tokens", "max_completion_tokens"):
            if isinstance(body.get(field), int):
                body[field] = max(1, body[field] - job.prefix_tokens)
        if job.kind is JobKind.CHAT:
            prefix = {"role": "assistant", "content": job.prefix}
            body["messages"] = [*body.get("messages", []), prefix]
        elif isinstance(body.get("prompt"), str):
            body["prompt"] += job.prefix
    if job.stream:
        body["stream"] = True
        # Ask for a usage chunk; servers that ignore it (llama.cpp) get their tokens counted.
        body["stream_options"] = {"include_usage": True}
    else:
        body.pop("stream", None)
    return body


async def run_attempt(
    provider: Provider, deployment: Deployment, job: Job, writer: ReplyWriter
) -> Reply:
    """Serve `job` on `deployment`; returns the terminal DONE reply (not yet sent)."""
    if job.stream and (job.prefix or job.finish_reason):
        done = await _known_end(deployment, job, writer)
        if done is not None:
            return done
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (job.deadline - time.time())
    first_token = job.stream_timeout or deployment.stream_timeout
    first_deadline = (
        min(deadline, loop.time() + first_token) if job.stream and first_token else deadline
    )
    try:
        async with asyncio.timeout_at(first_deadline) as timer:
            if job.kind is JobKind.TOKENS:
                return await _count(provider, deployment, job, writer)
            if job.stream:
                return await _stream(
                    provider, deployment, job, writer, timer=timer, deadline=deadline
                )
            return await _complete(provider, deployment, job, writer)
    except TimeoutError:
        if writer.visible or first_deadline >= deadline:
            raise BackendTimeout(
                f"request timed out: no complete answer from {deployment.id} before the deadline",
                status=504,
                code="timeout",
            ) from None
        raise BackendTimeout(
            f"{deployment.id}: no first token within {first_token:g}s (stream_timeout)"
        ) from None


async def _known_end(deployment: Deployment, job: Job, writer: ReplyWriter) -> Reply | None:
    """The DONE reply of a stream carried on after its answer was complete, or None if more is
    due. Complete means: the client has the finish_reason (its holder died before the terminal
    message), or it has every token max_tokens allows (the holder died before the backend's
    finish arrived). Asking the backend for more then would append tokens to a whole answer."""
    if job.finish_reason is None:
        limit = token_limit(job, deployment)
        if limit is None or job.prefix_tokens < limit:
            return None
        # The client has all its tokens but not their end: send the end it would have had.
        end: dict[str, Any] = {"index": 0, "finish_reason": "length"}
        if job.kind is JobKind.CHAT:
            end["delta"] = {}
        else:
            end["text"] = ""
        await writer.delta([[end]])
    answered = job.model_copy(update={"prefix": "", "prefix_tokens": 0})
    usage = counted_usage(backend_body(answered, deployment), job.prefix_tokens)
    return writer.reply(ReplyKind.DONE, usage=usage, usage_source="counted")


async def _complete(
    provider: Provider, deployment: Deployment, job: Job, writer: ReplyWriter
) -> Reply:
    body = backend_body(job, deployment)
    response = await provider.complete(deployment, job.kind, body)
    if job.kind is JobKind.EMBEDDING:
        pool_embeddings(response)
    usage = response.get("usage")
    source = "backend"
    if not usage or not usage.get("prompt_tokens"):
        usage, source = counted_usage(body, _output_tokens(job.kind, response)), "counted"
    return writer.reply(ReplyKind.DONE, response=response, usage=usage, usage_source=source)


async def _count(
    provider: Provider, deployment: Deployment, job: Job, writer: ReplyWriter
) -> Reply:
    """A prompt's token count: the backend's where it counts (Anthropic), else the estimate the
    worker uses for usage when a backend reports none. No usage: nothing was generated."""
    body = backend_body(job, deployment)
    if isinstance(provider, TokenCounter):
        tokens, source = await provider.count_tokens(deployment, body), "backend"
    else:
        tokens, source = estimate_prompt_tokens(body), "counted"
    response = {"input_tokens": tokens}
    return writer.reply(ReplyKind.DONE, response=response, usage_source=source)


def _output_tokens(kind: JobKind, response: dict[str, Any]) -> int:
    if kind is JobKind.EMBEDDING:
        return 0
    text = "".join(
        str(c.get("text") or "") if kind is JobKind.COMPLETION
        else str((c.get("message") or {}).get("content") or "")
        for c in response.get("choices", [])
    )  # fmt: skip
    return max(1, len(text) // 4)


def pool_embeddings(response: dict[str, Any]) -> None:
    """Servers that return one vector per token (llama.cpp with some models) get them
    mean-pooled and L2-normalised, so clients receive one vector per input as OpenAI's do."""
    for item in response.get("data", []):
        vectors = item.get("embedding")
        if isinstance(vectors, list) and vectors and isinstance(vectors[0], list):
            width = len(vectors[0])
            mean = [sum(v[i] for v in vectors) / len(vectors) for i in range(width)]
            norm = math.sqrt(sum(x * x for x in mean)) or 1.0
            item["embedding"] = [x / norm for x in mean]


async def _stream(
    provider: Provider,
    deployment: Deployment,
    job: Job,
    writer: ReplyWriter,
    *,
    timer: asyncio.Timeout,
    deadline: float,
) -> Reply:
    body = backend_body(job, deployment)
    coalescer = Coalescer(skip_role=bool(job.prefix))
    usage: dict[str, Any] | None = None
    try:
        async for chunks in provider.stream(deployment, job.kind, body):
            for chunk in chunks:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                choices = chunk.get("choices")
                if choices:
                    coalescer.add(choices)
            # Role-only chunks wait for content: a retry before the first token stays invisible.
            if coalescer.visible:
                if not writer.visible:
                    timer.reschedule(deadline)  # first token in: stream_timeout no longer applies
                await writer.delta(coalescer.drain(), coalescer.content_chunks - writer.tokens)
    except ProviderError:
        if writer.finish_reason is None:
            raise
        # The backend failed after the client had the finish_reason (its usage chunk or [DONE]
        # lost): the answer is whole, so it ends as complete, with its usage counted.
    if not coalescer.finish_reasons:
        raise BackendProtocolError(f"{deployment.id}: the stream ended without a finish_reason")
    if coalescer:
        await writer.delta(coalescer.drain(), coalescer.content_chunks - writer.tokens)
    usage, source = _stream_usage(job, body, usage, coalescer.content_chunks)
    return writer.reply(ReplyKind.DONE, usage=usage, usage_source=source)


def _stream_usage(
    job: Job, body: dict[str, Any], usage: dict[str, Any] | None, chunks: int
) -> tuple[dict[str, Any], Literal["backend", "counted"]]:
    """The answer's usage: the backend's (else counted), with the tokens earlier holders sent."""
    source: Literal["backend", "counted"] = "backend"
    if not usage:
        usage, source = counted_usage(body, chunks), "counted"
    if job.prefix_tokens:
        usage = with_earlier_tokens(usage, job.prefix_tokens)
    return usage, source
