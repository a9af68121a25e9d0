"""Request bodies at the HTTP boundary (pydantic); unknown fields pass through to the backend."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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
