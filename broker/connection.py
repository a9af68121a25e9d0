"""Redis connections: bounded pools, and the one place redis-py errors become BrokerUnavailable.

`REDIS_URL` is a `redis://` / `rediss://` URL of one server, or names a Sentinel-managed
primary: `redis+sentinel://[user:password@]host:26379,host2:26379/<service>[/<db>]`
(`rediss+sentinel://` for TLS). The password is the data nodes'; the sentinels are asked
without one. Connections follow the primary the sentinels name: after a failover, the next
connection (a pooled one fails once, then is retried) goes to the new primary.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from inferq.broker.errors import BrokerRefused, BrokerUnavailable

Redis = aioredis.Redis
PubSub = aioredis.client.PubSub

# Errors that mean "Redis is not there right now", as opposed to a bad command.
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme: TLS
_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelTarget:
    """A primary named by a `redis+sentinel://` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False


def sentinel_target(url: str) -> SentinelTarget | None:
    """The Sentinel-managed primary `url` names, or None for a plain `redis://` URL.

    Raises ValueError, naming the part, for a malformed `redis+sentinel://` URL."""
    scheme, _, rest = url.partition("://")
    if scheme not in SENTINEL_SCHEMES:
        return None
    netloc, _, path = rest.split("?", 1)[0].partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    sentinels = tuple(_host_port(h) for h in hosts.split(",") if h)
    parts = [p for p in path.split("/") if p]
    if not sentinels or not parts or len(parts) > 2:
        raise ValueError(
            f"{scheme}:// URL must be {scheme}://host:port[,host:port...]/service[/db]"
        )
    if len(parts) == 2 and not parts[1].isdigit():
        raise ValueError(f"{scheme}:// URL: the database must be a number, not {parts[1]!r}")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    return SentinelTarget(
        sentinels=sentinels,
        service=unquote(parts[0]),
        db=int(parts[1]) if len(parts) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        ssl=SENTINEL_SCHEMES[scheme],
    )


def _host_port(item: str) -> tuple[str, int]:
    """`host`, `host:port` or `[v6]:port` (the port defaults to Sentinel's, 26379)."""
    if item.startswith("["):
        host, _, port = item[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = item.partition(":")
    if not host or (port and not port.isdigit()):
        raise ValueError(f"a sentinel address in the Redis URL is not host:port: {item!r}")
    return host, int(port or _SENTINEL_PORT)


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool (connections go to the primary the sentinels name) with the blocking
    pool's bound: past `max_connections` callers wait, as with a plain URL."""


def connect(url: str, *, max_connections: int = 64, blocking_reads: bool = False) -> Redis:
    """A client over a BlockingConnectionPool: past `max_connections` callers wait, not fail.

    `blocking_reads` drops the socket timeout for clients that issue blocking XREADGROUP.
    Connect attempts time out fast so an outage is reported within a second. A command is
    retried once on a connection error: after a Redis restart (or a failover) every pooled
    connection is dead, and the first use of each must not fail a job (a second failure is a
    real outage).
    """
    options: dict[str, Any] = {
        "max_connections": max_connections,
        "timeout": 5,
        "socket_connect_timeout": 0.4,
        "socket_timeout": None if blocking_reads else 5.0,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "retry": Retry(NoBackoff(), 1),
    }
    target = sentinel_target(url)
    if target is None:
        pool = aioredis.BlockingConnectionPool.from_url(url, **options)
        return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it
    sentinel_options = {"socket_connect_timeout": 0.4, "socket_timeout": 1.0, "ssl": target.ssl}
    # redis-py's Sentinel classes carry no annotations.
    sentinels = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    sentinel_pool = _BlockingSentinelPool(  # type: ignore[no-untyped-call]
        target.service,
        sentinels,
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.ssl,
        **options,
    )
    return aioredis.Redis.from_pool(sentinel_pool)


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
