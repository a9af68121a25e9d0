"""What the routes share, built once in the app's lifespan and stored on `app.state`."""

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from inferq.api.accounting.budgets import BudgetView
from inferq.api.accounting.usage import UsageRecorder
from inferq.api.batch.driver import BatchDriver
from inferq.api.inference.live import LiveGroups
from inferq.api.tenants.cache import KeyCache
from inferq.api.tenants.fairshare import FairShare
from inferq.api.tenants.guard import Guard
from inferq.broker.connection import Redis
from inferq.broker.errors import BrokerError
from inferq.broker.jobs.admission import Admission
from inferq.broker.jobs.cache import ResponseCache
from inferq.broker.jobs.cancel import cancel
from inferq.broker.jobs.replies import ReplyDispatcher
from inferq.broker.keys import Keys
from inferq.config import GatewayConfig

log = logging.getLogger("inferq.api")


class CurrentConfig:
    """The config this process serves now. A reload replaces it whole; a request reads it once
    (through `Gateway.config`) and keeps that snapshot to the end."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.master_key = config.master_key or None
        self.max_request_bytes = config.fabric.max_request_bytes
        self.max_file_bytes = config.fabric.max_file_bytes

    def set(self, config: GatewayConfig) -> None:
        """Serve `config` from now on."""
        self.__init__(config)  # type: ignore[misc]


@dataclass
class Gateway:
    """The API process's resources: config, Redis client and reply dispatcher."""

    current: CurrentConfig
    redis: Redis
    keys: Keys
    dispatcher: ReplyDispatcher
    live: LiveGroups
    cache: ResponseCache
    usage: UsageRecorder
    budgets: BudgetView
    key_cache: KeyCache
    guard: Guard
    batch_driver: BatchDriver | None = None
    fair: FairShare = field(default_factory=FairShare)
    admission: Admission = field(default_factory=Admission)  # what we know of queue depths
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def config(self) -> GatewayConfig:
        """The config as of now (see CurrentConfig)."""
        return self.current.config

    async def reconfigure(self, config: GatewayConfig) -> None:
        """Serve a reloaded config; requests under way finish with the one they started with."""
        self.current.set(config)
        self.live.reconfigure(config)
        self.usage.reconfigure(config)
        self.budgets.reconfigure(config)
        if self.batch_driver is not None:
            self.batch_driver.config = config
        namespace = config.cache.namespace or "default"
        if namespace != self.cache.namespace:
            self.cache = self.cache.with_namespace(namespace)

    def abandon(self, job_id: str) -> None:
        """The client of `job_id` is gone: stop collecting its replies and tell the workers,
        in the background (this runs in cleanup paths that must not wait on Redis)."""
        self.dispatcher.close(job_id)
        self.background(self._cancel(job_id))

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` without making the request wait; Redis errors are logged, not raised."""
        task = asyncio.get_running_loop().create_task(self._quietly(work))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _quietly(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except BrokerError as exc:
            log.warning("background Redis work failed: %s", exc)

    async def _cancel(self, job_id: str) -> None:
        await cancel(self.redis, self.keys, job_id)


def gateway(request: Request) -> Gateway:
    """The Gateway of the app serving `request`."""
    gw: Gateway = request.app.state.gateway
    return gw
