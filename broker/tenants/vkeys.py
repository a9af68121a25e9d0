"""Virtual keys in Redis: one JSON record per key, named by the SHA-256 of the key.

The key itself (`sk-` + 43 URL-safe characters, 256 bits from `secrets`) is shown once, when it
is generated; Redis holds only its hash, so a dump, a replica or `MONITOR` never yields a
usable key. Every change bumps a version counter and is announced on a pub/sub channel, which
every API process hears to drop the record from its cache (see api/tenants/cache.py).
"""

import calendar
import hashlib
import re
import secrets
import time
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from inferq.broker.connection import Redis, is_cluster, translate_errors
from inferq.broker.keys import Keys

KEY_PREFIX = "sk-"
_DURATION = re.compile(r"^(\d{1,6})(s|m|h|d|mo)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "mo": 30 * 86400}


def new_key() -> str:
    """A fresh virtual key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str | bytes) -> str:
    """The name a key is stored under: its SHA-256, hex."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()


def valid_duration(text: str) -> bool:
    """True for LiteLLM's duration syntax: `30s`, `15m`, `1h`, `7d`, `1mo`."""
    match = _DURATION.match(text)
    return match is not None and int(match.group(1)) > 0


def duration_seconds(text: str) -> float:
    """Seconds in a duration (a month counts 30 days)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def budget_period(duration: str, now: float) -> tuple[str, float]:
    """The name of the budget period `now` falls in, and when it ends.

    Periods are aligned to the epoch (UTC): `1d` resets at midnight, `1h` on the hour, and
    `1mo` on the first of the month, so every process agrees on the period without talking.
    """
    match = _DURATION.match(duration)
    if match is None:
        raise ValueError(f"not a duration: {duration!r}")
    n, unit = int(match.group(1)), match.group(2)
    if unit == "mo":
        t = time.gmtime(now)
        index = (t.tm_year * 12 + t.tm_mon - 1) // n
        year, month0 = divmod((index + 1) * n, 12)
        end = calendar.timegm((year, month0 + 1, 1, 0, 0, 0, 0, 0, 0))
        return f"{duration}:{index}", float(end)
    seconds = n * _UNIT_SECONDS[unit]
    index = int(now // seconds)
    return f"{duration}:{index}", float((index + 1) * seconds)


class KeyRecord(BaseModel):
    """What Redis holds about one virtual key (LiteLLM's field names)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    token: str = Field(pattern=r"^[0-9a-f]{64}$")  # SHA-256 of the key
    # The key's lasting name (usage, spend, logs): the first hash's prefix, kept when the key
    # is regenerated, so its usage and budget carry on.
    id: str | None = Field(default=None, pattern=r"^[0-9a-f]{12}$")
    key_alias: str | None = None
    models: tuple[str, ...] = ()  # group or alias names; empty: every model
    max_budget: float | None = None  # USD per budget_duration (or ever, without one)
    budget_duration: str | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    expires: float | None = None  # unix time
    metadata: dict[str, Any] = Field(default_factory=dict)
    team_id: str | None = None
    user_id: str | None = None
    role: Literal["admin", "user"] = "user"
    priority: int = Field(default=1, ge=1, le=1000)  # share of a backend against other keys
    created: float = 0.0

    @property
    def key_id(self) -> str:
        """The short public name of the key in usage, spend and logs: a prefix of its first
        hash (never of the key)."""
        return self.id or self.token[:12]

    @property
    def admin(self) -> bool:
        """May manage keys and see everyone's work."""
        return self.role == "admin"

    def expired(self, now: float) -> bool:
        """True once the key's `duration` has run out."""
        return self.expires is not None and now >= self.expires

    @property
    def limited(self) -> bool:
        """True when requests must be counted against shared limits."""
        return any(v is not None for v in (self.rpm_limit, self.tpm_limit,
                                           self.max_parallel_requests))  # fmt: skip

    def period(self, now: float) -> tuple[str, float | None]:
        """The key's budget period at `now` and when it resets (`all`, None: never)."""
        if not self.budget_duration:
            return "all", None
        return budget_period(self.budget_duration, now)

    def encode(self) -> bytes:
        """Serialize for Redis."""
        return orjson.dumps(self.model_dump(mode="json"))


def _decode(raw: bytes | None) -> KeyRecord | None:
    return None if raw is None else KeyRecord.model_validate_json(raw)


async def save(redis: Redis, keys: Keys, record: KeyRecord, *, replaces: str = "") -> None:
    """Store `record` (under a new hash, dropping `replaces`, when the key was regenerated)
    and announce the change."""
    async with translate_errors():
        # One MULTI on one server; on a cluster the record, index and version are in different
        # slots and go in this order (an interrupted change is made whole by repeating it).
        pipe = redis.pipeline(transaction=not is_cluster(redis))
        pipe.set(keys.vkey(record.token), record.encode())
        pipe.hset(keys.vkeys(), record.token, record.key_alias or "")
        if replaces:
            pipe.delete(keys.vkey(replaces))
            pipe.hdel(keys.vkeys(), replaces)
        pipe.incr(keys.vkeys_version())
        await pipe.execute()
        await _announce(redis, keys, [record.token, replaces] if replaces else [record.token])


async def _announce(redis: Redis, keys: Keys, tokens: list[str]) -> None:
    for token in tokens:
        await redis.publish(keys.vkeys_channel(), token)


async def load(redis: Redis, keys: Keys, token: str) -> KeyRecord | None:
    """The record stored under a key's hash, if any."""
    async with translate_errors():
        raw: Any = await redis.get(keys.vkey(token))
    return _decode(raw)


async def usable(redis: Redis, keys: Keys, key: str) -> KeyRecord:
    """The record of `key` (the key itself), for a client that runs work under it; ValueError
    when it is unknown, revoked or expired (without saying which)."""
    record = await load(redis, keys, hash_key(key.strip()))
    if record is None or record.expired(time.time()):
        raise ValueError("invalid key (unknown, revoked or expired)")
    return record


async def load_all(redis: Redis, keys: Keys) -> list[KeyRecord]:
    """Every key record."""
    async with translate_errors():
        tokens: Any = await redis.hkeys(keys.vkeys())
        if not tokens:
            return []
        pipe = redis.pipeline(transaction=False)  # GETs, not MGET: a cluster splits these
        for token in tokens:
            pipe.get(keys.vkey(token.decode()))
        raws: Any = await pipe.execute()
    return [r for r in (_decode(raw) for raw in raws) if r is not None]


async def token_of_alias(redis: Redis, keys: Keys, alias: str) -> str | None:
    """The hash of the key named `alias`, if any."""
    async with translate_errors():
        index: Any = await redis.hgetall(keys.vkeys())
    for token, name in index.items():
        if name.decode() == alias:
            return str(token.decode())
    return None


async def delete(redis: Redis, keys: Keys, tokens: list[str]) -> list[str]:
    """Revoke keys by hash; returns the hashes that existed. Announced at once."""
    async with translate_errors():
        pipe = redis.pipeline(transaction=not is_cluster(redis))
        for token in tokens:
            pipe.delete(keys.vkey(token))
            pipe.hdel(keys.vkeys(), token)
        pipe.incr(keys.vkeys_version())
        done = await pipe.execute()
        gone = [t for i, t in enumerate(tokens) if done[2 * i]]
        await _announce(redis, keys, tokens)
    return gone


async def version(redis: Redis, keys: Keys) -> int:
    """The change counter (0 before any key existed)."""
    async with translate_errors():
        raw: Any = await redis.get(keys.vkeys_version())
    return int(raw or 0)


async def mark_used(redis: Redis, keys: Keys, used: dict[str, float]) -> None:
    """Record when keys (by id) were last used."""
    if not used:
        return
    async with translate_errors():
        await redis.hset(keys.vkeys_used(), mapping=used)  # type: ignore[arg-type]


async def last_used(redis: Redis, keys: Keys) -> dict[str, float]:
    """When each key (by id) was last used."""
    async with translate_errors():
        raw: Any = await redis.hgetall(keys.vkeys_used())
    return {k.decode(): float(v) for k, v in raw.items()}
