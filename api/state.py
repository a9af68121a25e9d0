"""What the routes share, built once in the app's lifespan and stored on `app.state`."""

import asyncio
import logging
from dataclasses import dataclass, field

from starlette.requests import Request

from api.live import LiveGroups
from broker.cancel import cancel
from broker.connection import Redis
from broker.errors import BrokerError
from broker.keys import Keys
from broker.replies import ReplyDispatcher
from config import GatewayConfig

log = logging.getLogger("inferq.api")


@dataclass
class Gateway:
    """The API process's resources: config, Redis client and reply dispatcher."""

    config: GatewayConfig
    redis: Redis
    keys: Keys
    dispatcher: ReplyDispatcher
    live: LiveGroups
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    def abandon(self, job_id: str) -> None:
        """The client of `job_id` is gone: stop collecting its replies and tell the workers,
        in the background (this runs in cleanup paths that must not wait on Redis)."""
        self.dispatcher.close(job_id)
        task = asyncio.get_running_loop().create_task(self._cancel(job_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cancel(self, job_id: str) -> None:
        try:
            await cancel(self.redis, self.keys, job_id)
        except BrokerError as exc:
            log.warning("could not announce cancellation of job %s: %s", job_id, exc)


def gateway(request: Request) -> Gateway:
    """The Gateway of the app serving `request`."""
    gw: Gateway = request.app.state.gateway
    return gw
