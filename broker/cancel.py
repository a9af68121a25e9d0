"""Cancellation: API processes announce abandoned jobs; every worker hears it.

A worker running the job aborts its backend call; one that picks the job up later skips it
(workers remember recent cancellations for a while).
"""

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from contextlib import suppress

from broker.connection import UNAVAILABLE, PubSub, Redis, translate_errors
from broker.keys import Keys

log = logging.getLogger("inferq.broker")


async def cancel(redis: Redis, keys: Keys, job_id: str) -> None:
    """Tell every worker that `job_id` is no longer wanted."""
    async with translate_errors():
        await redis.publish(keys.cancel(), job_id.encode())


class CancelListener:
    """Subscribes to the cancel channel; calls `on_cancel(job_id)` and remembers recent ids."""

    def __init__(self, redis: Redis, keys: Keys, on_cancel: Callable[[str], None]) -> None:
        self._redis = redis
        self._channel = keys.cancel()
        self._on_cancel = on_cancel
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._task: asyncio.Task[None] | None = None

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._recent

    def start(self) -> None:
        """Start listening in the background (reconnecting as needed)."""
        self._task = asyncio.create_task(self._run(), name="cancel-listener")

    async def stop(self) -> None:
        """Stop listening."""
        if self._task:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        pubsub: PubSub | None = None
        while True:
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message and message.get("type") == "message":
                        self._heard(message["data"].decode())
            except UNAVAILABLE:
                if pubsub is not None:
                    with suppress(*UNAVAILABLE):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
                await asyncio.sleep(0.5)

    def _heard(self, job_id: str) -> None:
        self._recent[job_id] = None
        while len(self._recent) > 100_000:
            self._recent.popitem(last=False)
        self._on_cancel(job_id)
