"""Publishing on reply channels: PUBLISH on one server, SPUBLISH (sharded pub/sub) on a cluster.

On a Redis Cluster a plain PUBLISH is broadcast over the cluster bus to every node; a reply
channel has one listener (its API process), so replies go by SPUBLISH to the one shard that
owns the channel's slot. Broadcast channels (cancel, control, key changes) stay on PUBLISH:
every process listens to them, wherever it is connected.
"""

from typing import Any

from inferq.broker.connection import is_cluster


def publish_reply(redis: Any, channel: str, data: bytes) -> Any:
    """PUBLISH `data` on a reply channel, or SPUBLISH it on a cluster; `redis` is a client (the
    caller awaits the result) or a pipeline (the command is queued)."""
    if is_cluster(redis):
        return redis.spublish(channel, data)
    return redis.publish(channel, data)
