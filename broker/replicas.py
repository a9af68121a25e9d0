"""Waiting for replicas: Redis replicates asynchronously, so a write the primary acknowledged
survives a failover only once a replica has it. `inferq_settings.replica_acks` makes enqueueing a
job and ending one wait for that (WAIT), at most `replica_ack_timeout_ms`.
"""

import logging
from dataclasses import dataclass
from functools import cache

from inferq.broker.connection import Redis, is_cluster, translate_errors
from inferq.broker.keys import Keys
from inferq.config import FabricConfig

log = logging.getLogger("inferq.broker")


@dataclass(frozen=True)
class ReplicaAcks:
    """How many replicas must have a write before it counts as made (0: do not wait)."""

    replicas: int = 0
    timeout_ms: int = 100

    @classmethod
    def of(cls, fabric: FabricConfig) -> "ReplicaAcks":
        """The setting of a config's `inferq_settings`."""
        return cls(fabric.replica_acks, fabric.replica_ack_timeout_ms)


NO_ACKS = ReplicaAcks()


async def confirm(redis: Redis, keys: Keys, acks: ReplicaAcks) -> bool:
    """Wait until `acks.replicas` replicas have every write made so far, by any connection (at
    most `acks.timeout_ms`); False, logged, when fewer had them in time.

    WAIT counts the writes of its own connection (and inside MULTI it does not block), so a tiny
    write goes first on the same connection: the replication stream is ordered, so a replica
    that has it has everything written before it, such as the caller's MULTI or script.
    """
    if acks.replicas <= 0:
        return True
    if is_cluster(redis):
        # WAIT counts one connection's writes to one node; a cluster client spreads a job's
        # writes over nodes and pooled connections, so there is nothing sound to wait on.
        _warn_not_on_cluster()
        return False
    async with translate_errors():
        pipe = redis.pipeline(transaction=False)
        pipe.set(keys.replica_probe(), b"1", px=60_000)
        pipe.wait(acks.replicas, acks.timeout_ms)
        _, acked = await pipe.execute()
    if int(acked) >= acks.replicas:
        return True
    log.warning(
        "only %d of %d replicas acknowledged a write within %d ms: a failover now could lose it",
        int(acked),
        acks.replicas,
        acks.timeout_ms,
    )
    return False


@cache
def _warn_not_on_cluster() -> None:
    log.warning("replica_acks is not applied on a Redis Cluster: writes are not waited for")
