"""The response cache in Redis: entries with a TTL, and single-flight markers.

An entry is a complete, successful answer (never an error or a cut stream). A flight marker says
"this request is being answered now": identical requests wait for its entry instead of asking
a backend again.
"""

from inferq.broker.connection import Redis, is_cluster, translate_errors
from inferq.broker.keys import Keys
from inferq.broker.scripts import LuaScript

_DELETE_IF_OWNER = LuaScript("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")


class ResponseCache:
    """Get and put answers by request hash; mark and clear answers in flight."""

    def __init__(self, redis: Redis, keys: Keys, namespace: str) -> None:
        self._redis = redis
        self._keys = keys
        self._namespace = namespace

    @property
    def namespace(self) -> str:
        """The default namespace of this cache's keys."""
        return self._namespace

    def with_namespace(self, namespace: str) -> "ResponseCache":
        """The same cache under another default namespace (after a reload changed it)."""
        return ResponseCache(self._redis, self._keys, namespace)

    async def get(self, digest: str, namespace: str | None = None) -> bytes | None:
        """The stored answer for `digest`, or None."""
        async with translate_errors():
            value = await self._redis.get(self._keys.cache(namespace or self._namespace, digest))
        return value if isinstance(value, bytes) else None

    async def put(
        self, digest: str, entry: bytes, ttl: float, namespace: str | None = None
    ) -> None:
        """Store an answer for `ttl` seconds and clear its flight marker."""
        ns = namespace or self._namespace
        async with translate_errors():
            # On a cluster the entry and the marker are in different slots: entry first (a
            # marker left behind expires by itself).
            pipe = self._redis.pipeline(transaction=not is_cluster(self._redis))
            pipe.set(self._keys.cache(ns, digest), entry, px=max(int(ttl * 1000), 1))
            pipe.delete(self._keys.flight(ns, digest))
            await pipe.execute()

    async def claim_flight(
        self, digest: str, owner: str, ttl: float, namespace: str | None = None
    ) -> bool:
        """True when this request is the first in flight for `digest` (it will answer)."""
        key = self._keys.flight(namespace or self._namespace, digest)
        async with translate_errors():
            return bool(await self._redis.set(key, owner, nx=True, px=max(int(ttl * 1000), 1)))

    async def in_flight(self, digest: str, namespace: str | None = None) -> bool:
        """True while some request is answering `digest`."""
        async with translate_errors():
            return bool(
                await self._redis.exists(self._keys.flight(namespace or self._namespace, digest))
            )

    async def end_flight(self, digest: str, owner: str, namespace: str | None = None) -> None:
        """Clear the flight marker if this request still owns it (it failed: no entry)."""
        key = self._keys.flight(namespace or self._namespace, digest)
        async with translate_errors():
            pipe = self._redis.pipeline(transaction=True)
            pipe.get(key)
            (current,) = await pipe.execute()
            if current == owner.encode():
                await self._redis.delete(key)
