"""Which virtual key owns each file and batch, so a key sees only its own objects.

Objects made with the master key (or before keys existed) have no owner: only admins see them.
A batch's output and error files belong to the batch's owner.
"""

from typing import Any

from inferq.broker.connection import Redis, translate_errors
from inferq.broker.keys import Keys


async def set_owner(redis: Redis, keys: Keys, object_id: str, token: str) -> None:
    """Record that the key whose hash is `token` owns `object_id`."""
    async with translate_errors():
        await redis.hset(keys.owners(), object_id, token)


async def owners_of(redis: Redis, keys: Keys, object_ids: list[str]) -> list[str | None]:
    """The owner of each object (None: no owner recorded)."""
    if not object_ids:
        return []
    async with translate_errors():
        raws: Any = await redis.hmget(keys.owners(), object_ids)
    return [r.decode() if r is not None else None for r in raws]


async def drop_owner(redis: Redis, keys: Keys, object_id: str) -> None:
    """Forget a deleted object's owner."""
    async with translate_errors():
        await redis.hdel(keys.owners(), object_id)


async def transfer(redis: Redis, keys: Keys, old: str, new: str) -> int:
    """Give everything the key `old` owned to `new` (a regenerated key); returns how many."""
    moved = 0
    async with translate_errors():
        async for object_id, owner in redis.hscan_iter(keys.owners()):
            if owner.decode() == old:
                await redis.hset(keys.owners(), object_id, new)
                moved += 1
    return moved
