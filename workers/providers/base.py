"""The provider interface: how a worker talks to one kind of backend."""

from collections.abc import AsyncIterator
from typing import Any, Protocol

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
