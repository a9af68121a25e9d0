"""Redis connections: bounded pools, and the one place redis-py errors become BrokerUnavailable.

`REDIS_URL` names one server (`redis://`, `rediss://`), a primary found through Sentinel
(`redis+sentinel://`, `rediss+sentinel://`; see `SentinelURL`), or a Redis Cluster by any of its
nodes (`redis+cluster://`, `rediss+cluster://`; see `ClusterURL`). A client made here follows a
failover by itself: its connections ask the sentinels where the primary is whenever they
(re)connect, and a connection that finds the old primary gone or demoted is dropped. A cluster
client follows MOVED/ASK redirections and slot moves by itself.

A cluster client is a `redis.asyncio.RedisCluster`, typed here as `Redis`: the commands the
broker uses have the same names and arguments on both; the few places that differ (pub/sub,
transactions over several slots) ask `is_cluster()`.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from inferq.broker.errors import BrokerRefused, BrokerUnavailable
from inferq.broker.multiplex import MultiplexedRedis

Redis = aioredis.Redis
PubSub = aioredis.client.PubSub

# Errors that mean "Redis is not there right now", as opposed to a bad command. On a cluster:
# a node down (CLUSTERDOWN), a slot nobody serves yet, and redirections (MOVED/ASK, TRYAGAIN
# during a slot move) that still failed after redis-py's own retries.
UNAVAILABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    ClusterDownError,
    SlotNotCoveredError,
    TryAgainError,
    AskError,
)


@dataclass(frozen=True)
class SentinelURL:
    """`redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]`.

    The password (and user) is the data nodes'; sentinels that want one of their own take it
    as `?sentinel_password=...`. `rediss+sentinel://` speaks TLS to the data nodes.
    """

    hosts: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> "SentinelURL | None":
        """The Sentinel URL `url` is, or None for a plain `redis://` one; ValueError when it
        is a Sentinel URL that cannot be used."""
        scheme, sep, _ = url.partition("://")
        if not sep or scheme not in ("redis+sentinel", "rediss+sentinel"):
            return None
        hosts, username, password, path, query = _multi_host(url)
        if not hosts or not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise ValueError(
                "a Sentinel URL is redis+sentinel://host:port[,host:port...]/service[/db]"
            )
        return cls(
            hosts=hosts,
            service=unquote(path[0]),
            db=int(path[1]) if len(path) == 2 else 0,
            username=username,
            password=password,
            sentinel_password=query.get("sentinel_password", [""])[0] or None,
            tls=scheme == "rediss+sentinel",
        )


@dataclass(frozen=True)
class ClusterURL:
    """`redis+cluster://[[user]:password@]host:port[,host:port...][/0]`: any nodes of a Redis
    Cluster (the client learns the others from them). `rediss+cluster://` speaks TLS. A
    cluster has one database, 0."""

    hosts: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> "ClusterURL | None":
        """The cluster URL `url` is, or None for another kind; ValueError when it is a cluster
        URL that cannot be used."""
        scheme, sep, _ = url.partition("://")
        if not sep or scheme not in ("redis+cluster", "rediss+cluster"):
            return None
        hosts, username, password, path, _ = _multi_host(url)
        if not hosts or path not in ([], ["0"]):
            raise ValueError(
                "a cluster URL is redis+cluster://host:port[,host:port...] (database 0 only)"
            )
        return cls(
            hosts=hosts,
            username=username,
            password=password,
            tls=scheme == "rediss+cluster",
        )


def is_cluster(redis: Any) -> bool:
    """True when `redis` is a Redis Cluster client (or one of its pipelines)."""
    return isinstance(redis, RedisCluster | ClusterPipeline)


def _multi_host(
    url: str,
) -> tuple[tuple[tuple[str, int], ...], str | None, str | None, list[str], dict[str, list[str]]]:
    """The parts of a `scheme://[[user]:password@]host:port[,host:port...]/path?query` URL
    (Sentinel's and Cluster's): hosts, user, password, path segments, query."""
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    hosts = tuple(_host_port(item) for item in hostlist.split(",") if item)
    path = [p for p in parts.path.split("/") if p]
    return hosts, unquote(username) or None, unquote(password) or None, path, parse_qs(parts.query)


def _host_port(item: str) -> tuple[str, int]:
    host, _, port = item.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"a sentinel address is host:port, not {item!r}")
    return host.strip("[]"), int(port)


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool (connections find the primary) that waits, rather than fails, when all
    of its connections are busy; closing it closes its sentinel connections too."""

    async def aclose(self) -> None:
        await super().aclose()
        await self.sentinel_manager.aclose()


def connect(url: str, *, max_connections: int = 64, blocking_reads: bool = False) -> Redis:
    """A client over a blocking pool: past `max_connections` callers wait, not fail. Its
    commands are pipelined automatically over a few connections (`broker.multiplex`).

    `blocking_reads` drops the socket timeout for clients that issue blocking XREADGROUP.
    Connect attempts time out fast so an outage is reported within a second. A command is
    retried once on a connection error: after a Redis restart (or a Sentinel failover) every
    pooled connection is dead, and the first use of each must not fail a job (a second failure
    is a real outage).
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
    cluster = ClusterURL.parse(url)
    if cluster is not None:
        return _connect_cluster(cluster, options)
    sentinel = SentinelURL.parse(url)
    if sentinel is None:
        pool = aioredis.BlockingConnectionPool.from_url(url, **options)
        return MultiplexedRedis.from_pool(pool)  # the client owns the pool: aclose() closes it
    manager = Sentinel(  # type: ignore[no-untyped-call]
        list(sentinel.hosts),
        sentinel_kwargs={
            "socket_connect_timeout": 0.4,
            "socket_timeout": 1.0,
            "password": sentinel.sentinel_password,
        },
    )
    client: Redis = manager.master_for(
        sentinel.service,
        redis_class=MultiplexedRedis,
        connection_pool_class=_BlockingSentinelPool,
        db=sentinel.db,
        username=sentinel.username,
        password=sentinel.password,
        ssl=sentinel.tls,
        check_connection=True,
        **options,
    )
    return client


# A cluster client's pool (one per node) fails, not waits, past its size: size it for the
# concurrency a process reaches (commands are short; blocking reads hold one each).
_CLUSTER_MIN_CONNECTIONS = 512


def _connect_cluster(url: ClusterURL, options: dict[str, Any]) -> Redis:
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in url.hosts],
        username=url.username,
        password=url.password,
        ssl=url.tls,
        max_connections=max(options["max_connections"], _CLUSTER_MIN_CONNECTIONS),
        socket_connect_timeout=options["socket_connect_timeout"],
        socket_timeout=options["socket_timeout"],
        socket_keepalive=True,
        health_check_interval=options["health_check_interval"],
        # Redirections and a node's restart are retried by redis-py (3 times, re-reading the
        # slot map); what still fails is reported as unavailable.
        retry=Retry(NoBackoff(), 3),
    )
    return cast(Redis, client)


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Map redis-py errors: connection-level ones to BrokerUnavailable, the rest (OOM,
    READONLY, WRONGTYPE, a script error) to BrokerRefused."""
    try:
        yield
    except MovedError as exc:
        # From a plain client: REDIS_URL names one node of a cluster. (A cluster client follows
        # MOVED itself; one that still surfaces is a slot map in flux: retry shortly.)
        raise BrokerRefused(
            f"Redis answered {exc}: if REDIS_URL names a node of a Redis Cluster, write it "
            "redis+cluster://host:port"
        ) from exc
    except UNAVAILABLE as exc:
        raise BrokerUnavailable(f"Redis is unreachable: {exc}") from exc
    except RuntimeError as exc:
        # A write on a connection the peer (or a cluster client's reinitialisation) closed
        # surfaces from uvloop as "unable to perform operation on <TCPTransport closed=True>;
        # the handler is closed", not as a ConnectionError (redis-py issue #4287).
        if "closed" not in str(exc):
            raise
        raise BrokerUnavailable(f"Redis is unreachable: {exc}") from exc
    except (RedisError, RedisClusterException) as exc:
        raise BrokerRefused(f"Redis refused a command: {exc}") from exc


async def ping(redis: Redis) -> bool:
    """True when Redis answers."""
    try:
        return bool(await redis.ping())
    except UNAVAILABLE:
        return False
