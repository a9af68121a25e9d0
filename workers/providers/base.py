"""The provider interface: how a worker talks to one kind of backend."""

from collections.abc import AsyncIterator
from typing import Any, Protocol

from config import Deployment

Chunk = dict[str, Any]


class Provider(Protocol):
    """A backend wire protocol. Implementations raise only `workers.errors.ProviderError`."""

    async def complete(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        """Non-streaming call: the OpenAI `chat.completion` body."""
        ...

    def stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[list[Chunk]]:
        """Streaming call: OpenAI `chat.completion.chunk` dicts, batched per network read."""
        ...
