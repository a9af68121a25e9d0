"""A background pub/sub subscription to a few fixed channels, reconnecting while Redis is down."""

import asyncio
import logging
from collections.abc import Callable, Mapping
from contextlib import suppress

from inferq.broker.connection import UNAVAILABLE, PubSub, Redis, is_cluster

log = logging.getLogger("inferq.broker")


class Subscriber:
    """Calls `handlers[channel](data)` for each message; one connection for all the channels.

    Messages published while Redis is unreachable are lost (that is pub/sub); the channels this
    serves (cancellations, reload requests) are hints whose loss a caller can see and repeat.
    """

    def __init__(self, redis: Redis, handlers: Mapping[str, Callable[[bytes], None]]) -> None:
        self._redis = redis
        self._handlers = {name.encode(): handler for name, handler in handlers.items()}
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        """Start listening in the background."""
        self._task = asyncio.create_task(self._run(), name="subscriber")

    async def stop(self) -> None:
        """Stop listening."""
        if self._task:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            pubsub: PubSub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                if is_cluster(self._redis):
                    # A cluster client learns its nodes on its first command; a subscription
                    # needs them first (a plain PUBLISH reaches every node: any one will do).
                    await self._redis.initialize()
                await pubsub.subscribe(*self._handlers)
                self.subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message and message.get("type") == "message":
                        self._dispatch(message["channel"], message["data"])
            except UNAVAILABLE:
                self.subscribed.clear()
                with suppress(*UNAVAILABLE):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                await asyncio.sleep(0.5)

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        handler = self._handlers.get(channel)
        if handler is None:
            return
        try:
            handler(data)
        except Exception:  # a handler's bug must not end the subscription
            log.exception("handler for %s failed", channel.decode(errors="replace"))
