"""The provider interface: how a worker talks to one kind of backend."""

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from inferq.broker.messages import JobKind
from inferq.config import Deployment

Chunk = dict[str, Any]


class Provider(Protocol):
    """A backend wire protocol, spoken in OpenAI's shapes on our side.

    Implementations raise only `workers.errors.ProviderError` (and subclasses).
    """

    async def complete(
        self, deployment: Deployment, kind: JobKind, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Non-streaming call: the OpenAI response body for `kind`."""
        ...

    def stream(
        self, deployment: Deployment, kind: JobKind, body: dict[str, Any]
    ) -> AsyncIterator[list[Chunk]]:
        """Streaming call: OpenAI chunk dicts for `kind`, batched per network read."""
        ...


@runtime_checkable
class TokenCounter(Protocol):
    """A provider whose backend counts a prompt's tokens itself (Anthropic's count_tokens)."""

    async def count_tokens(self, deployment: Deployment, body: dict[str, Any]) -> int:
        """The input tokens of an OpenAI chat request body, as the backend counts them."""
        ...
