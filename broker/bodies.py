"""OpenAI request bodies as the gateway reads them (pydantic), for the HTTP API and batch input
alike; unknown fields pass through to the backend."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inferq.broker.errors import InvalidBody
from inferq.broker.messages import JobKind
from inferq.config.errors import error_path

# Request fields that steer the gateway (LiteLLM's, mostly) and never reach a backend.
# `api_base`/`api_key`/`base_url` in particular must not let a client redirect a deployment.
GATEWAY_FIELDS = frozenset(
    {
        "model", "stream", "timeout", "stream_timeout", "num_retries", "fallbacks",
        "disable_fallbacks", "context_window_fallback_dict", "cache", "caching", "metadata",
        "mock_response", "api_key", "api_base", "base_url", "api_version",
    }
)  # fmt: skip


class GatewayOptions(BaseModel):
    """What every inference request may say to the gateway itself."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    stream: bool = False
    timeout: float | None = Field(default=None, gt=0)
    stream_timeout: float | None = Field(default=None, gt=0)
    num_retries: int | None = Field(default=None, ge=0, le=10)
    fallbacks: list[str] | None = None
    disable_fallbacks: bool = False


class Message(BaseModel):
    """One chat message; content shapes are the backend's business beyond their types."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    """`stream_options`."""

    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(GatewayOptions):
    """`POST /v1/chat/completions` as far as the gateway needs to understand it."""

    messages: list[Message] = Field(min_length=1)
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    tools: list[dict[str, Any]] | None = None


class CompletionRequest(GatewayOptions):
    """`POST /v1/completions` (legacy text completions)."""

    prompt: str | list[str] | list[int] | list[list[int]]
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)


class EmbeddingRequest(GatewayOptions):
    """`POST /v1/embeddings`."""

    input: str | list[str] | list[int] | list[list[int]]
    stream: Literal[False] = False


_MODELS: dict[JobKind, type[GatewayOptions]] = {
    JobKind.CHAT: ChatCompletionRequest,
    JobKind.COMPLETION: CompletionRequest,
    JobKind.EMBEDDING: EmbeddingRequest,
}


def check_body(kind: JobKind, data: dict[str, Any]) -> GatewayOptions:
    """`data` validated as the request of `kind`, or InvalidBody naming the first bad field."""
    try:
        return _MODELS[kind].model_validate(data)
    except ValidationError as exc:
        raise invalid_body(exc) from None


def invalid_body(exc: ValidationError) -> InvalidBody:
    """The first problem of a validation error, named OpenAI-style (`messages.0.role`)."""
    err = exc.errors()[0]
    param = error_path(err["loc"]).replace("[", ".").replace("]", "")
    message = "missing required field" if err["type"] == "missing" else err["msg"]
    return InvalidBody(f"Invalid request: {param}: {message}", param=param or None)


def backend_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The body without the fields that steer the gateway."""
    return {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
