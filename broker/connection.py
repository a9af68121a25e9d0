"""Redis connections: bounded pools, and the one place redis-py errors become BrokerUnavailable."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from inferq.broker.errors import BrokerRefused, BrokerUnavailable

Redis = aioredis.Redis
PubSub = aioredis.client.PubSub

# Errors that mean "Redis is not there right now", as opposed to a bad command.
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def connect(url: str, *, max_connections: int = 64, blocking_reads: bool = False) -> Redis:
    """A client over a BlockingConnectionPool: past `max_connections` callers wait, not fail.

    `blocking_reads` drops the socket timeout for clients that issue blocking XREADGROUP.
    Connect attempts time out fast so an outage is reported within a second. A command is
    retried once on a connection error: after a Redis restart every pooled connection is dead,
    and the first use of each must not fail a job (a second failure is a real outage).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=5,
        socket_connect_timeout=0.4,
        socket_timeout=None if blocking_reads else 5.0,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 1),
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Map redis-py errors: connection-level ones to BrokerUnavailable, the rest (OOM,
    READONLY, WRONGTYPE, a script error) to BrokerRefused."""
    try:
        yield
    except UNAVAILABLE as exc:
        raise BrokerUnavailable(f"Redis is unreachable: {exc}") from exc
    except RedisError as exc:
        raise BrokerRefused(f"Redis refused a command: {exc}") from exc


async def ping(redis: Redis) -> bool:
    """True when Redis answers."""
    try:
        return bool(await redis.ping())
    except UNAVAILABLE:
        return False
