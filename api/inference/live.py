"""Which model groups have a live worker: a view refreshed in the background, once a second.

A request for a group nobody serves is refused at once (or moves on along its alias chain)
instead of waiting in a queue until its deadline.
"""

import asyncio
import logging
import time
from contextlib import suppress

from inferq.broker.connection import Redis
from inferq.broker.errors import BrokerError
from inferq.broker.keys import Keys
from inferq.broker.ops.limits import cooldowns
from inferq.broker.ops.registry import live_workers
from inferq.config import GatewayConfig

log = logging.getLogger("inferq.api")


class LiveGroups:
    """The groups with a live worker now, or seen with one within `memory` seconds: a Redis
    restart wipes heartbeats for a moment, and that must not turn into a burst of 503s."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        config: GatewayConfig,
        interval: float = 1.0,
        memory: float = 6.0,
    ) -> None:
        self._config = config
        self._redis = redis
        self._keys = keys
        self._interval = interval
        self._memory = memory
        self._seen: dict[str, float] = {}
        self.groups: frozenset[str] = frozenset()
        self.cooling: frozenset[str] = frozenset()  # groups whose every deployment cools down
        self.slots: dict[str, int] = {}  # slots of the live workers of each group
        self._task: asyncio.Task[None] | None = None

    def reconfigure(self, config: GatewayConfig) -> None:
        """Follow a reloaded config (new groups count from the next refresh)."""
        self._config = config

    async def refresh(self) -> frozenset[str]:
        """Read the worker registry now (raises BrokerError when Redis is down)."""
        now = time.monotonic()
        slots: dict[str, int] = {}
        for worker in await live_workers(self._redis, self._keys):
            self._seen[worker.group] = now
            slots[worker.group] = slots.get(worker.group, 0) + worker.slots
        self.slots = slots
        self.groups = frozenset(g for g, t in self._seen.items() if now - t < self._memory)
        self.cooling = await self._cooling()
        return self.groups

    async def _cooling(self) -> frozenset[str]:
        left = await cooldowns(self._redis, self._keys, self._config.deployment_keys())
        return frozenset(
            group
            for group, deployments in self._config.groups.items()
            if deployments and all(left[d.id] > 0 for d in deployments)
        )

    def start(self) -> None:
        """Refresh in the background until `stop`."""
        self._task = asyncio.create_task(self._run(), name="live-groups")

    async def stop(self) -> None:
        """Stop refreshing."""
        if self._task:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with suppress(BrokerError):  # requests report the outage themselves
                await self.refresh()
            await asyncio.sleep(self._interval)
