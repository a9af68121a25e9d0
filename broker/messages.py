"""What travels through Redis: jobs on streams and reply messages on pub/sub (pydantic models).

A job is everything a worker needs to serve a request without asking the API anything. A reply is
one sequence-numbered message for one job; every job's replies end with exactly one terminal
message (`done` or `error`), so a reader can always tell a complete answer from a truncated one.
"""

from enum import StrEnum
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

# What a request id may be: the API takes a client's `x-request-id` only when it matches (it ends
# up in log lines, so no spaces, quotes or control characters), else it makes one.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


class Attempt(BaseModel):
    """One try of a job on one deployment (kept across retries and fallbacks)."""

    group: str
    deployment: str
    error: str | None = None
    at: float


class JobKind(StrEnum):
    """The OpenAI endpoint a job is for."""

    CHAT = "chat"  # /v1/chat/completions (and /v1/messages, translated)
    COMPLETION = "completion"  # /v1/completions
    EMBEDDING = "embedding"  # /v1/embeddings
    # /v1/messages/count_tokens: a chat body whose prompt is counted, nothing generated. The
    # answer is `{"input_tokens": N}`: the backend's own count where it has one (Anthropic).
    TOKENS = "count_tokens"


class Lane(StrEnum):
    """Which of its group's two streams a job waits in; workers take interactive jobs first."""

    INTERACTIVE = "interactive"  # a client waits on the other end (the HTTP API)
    BATCH = "batch"  # submitted in bulk; its result is stored, nobody waits on a channel


class Job(BaseModel):
    """A completion request on a group's stream."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=128)
    kind: JobKind = JobKind.CHAT
    model: str  # the name the client asked for; echoed in responses
    group: str
    fallbacks: list[str] = Field(default_factory=list)
    body: dict[str, Any]  # the OpenAI request body, minus routing fields
    stream: bool = False
    include_usage: bool = False
    reply_to: str | None = None  # pub/sub channel; None for fire-and-forget batch jobs
    created: float
    deadline: float
    attempts: list[Attempt] = Field(default_factory=list)
    num_retries: int | None = Field(default=None, ge=0, le=10)  # per-request override
    retries: int = 0  # retries used in the current group
    stream_timeout: float | None = Field(default=None, gt=0)  # bound on time to first token
    # Continuation state: the next reply sequence number, and the assistant text the client has
    # already received (a stream that moves to another deployment carries on from there).
    seq: int = Field(default=0, ge=0)
    prefix: str = ""
    prefix_tokens: int = Field(default=0, ge=0)  # tokens of `prefix`, off the max_tokens left
    # Set when the client has already received the answer's finish_reason: the answer is
    # complete and whoever holds the job next owes the client only its terminal message.
    finish_reason: str | None = None
    # The request id (the client's `x-request-id`, else the API's): names the job in worker logs.
    request_id: str | None = Field(default=None, pattern=REQUEST_ID_PATTERN)
    # Batch work (issue 7): the lane the job waits in, the submission it belongs to, and how
    # long its durable result record is kept (None: no record; its client awaits `reply_to`).
    lane: Lane = Lane.INTERACTIVE
    submission: str | None = Field(default=None, max_length=128)
    custom_id: str | None = None  # the submitter's name for this request
    result_ttl: float | None = Field(default=None, gt=0)
    # Tenants (issue 12): the id of the virtual key the job runs under (its usage and spend
    # count there; jobs of different keys share a group's slots fairly), and the key's budget
    # period when it has a budget.
    key: str | None = Field(default=None, max_length=64)
    budget_period: str | None = Field(default=None, max_length=64)

    def encode(self) -> bytes:
        """Serialize for XADD (orjson: the body can be large)."""
        return orjson.dumps(self.model_dump(mode="json", exclude_defaults=False))


class ReplyKind(StrEnum):
    """Kinds of reply message; DONE and ERROR are terminal."""

    DELTA = "delta"
    DONE = "done"
    ERROR = "error"


class ErrorInfo(BaseModel):
    """An error as the client will see it: HTTP status plus the OpenAI error fields."""

    status: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class Reply(BaseModel):
    """One message of a job's reply stream, numbered from 0 without gaps."""

    job: str
    seq: int = Field(ge=0)
    kind: ReplyKind
    group: str | None = None
    deployment: str | None = None
    # DELTA: each item is the `choices` list of one OpenAI chunk (text deltas coalesced).
    chunks: list[list[dict[str, Any]]] | None = None
    # DONE for a non-stream job: the whole completion body as the backend returned it.
    response: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    usage_source: Literal["backend", "counted"] | None = None
    tokens: int | None = None  # DELTA: output tokens (backend chunks) in this message
    cost: float | None = None  # USD, from the deployment's prices
    queue_ms: float | None = None  # time from enqueue to the worker that answered
    error: ErrorInfo | None = None
    attempts: int = 1

    @property
    def terminal(self) -> bool:
        """True for the last message of a job."""
        return self.kind is not ReplyKind.DELTA

    def encode(self) -> bytes:
        """Serialize for PUBLISH: the fields that are set, straight to orjson (a reply is sent
        for every few tokens; pydantic's own dump walked every chunk first, 5 µs a message)."""
        fields = {k: v for k, v in self.__dict__.items() if v is not None}
        if self.error is not None:
            fields["error"] = self.error.model_dump(exclude_none=True)
        return orjson.dumps(fields)
