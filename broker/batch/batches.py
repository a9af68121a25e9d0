"""Batch records for the OpenAI Batch API (`/v1/batches`) and the lease of whoever drives one.

A batch is a Redis hash whose fields are the OpenAI Batch object's, each JSON-encoded, so the
driver updating its counts and a client cancelling it never overwrite each other. Status
changes go through one script that checks the current status first: `validating` →
`in_progress` → `finalizing` → `completed`; `failed`; `expired`; `cancelling` → `cancelled`.
"""

import re
import secrets
import time
from enum import StrEnum
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field

from inferq.broker.connection import Redis, is_cluster, translate_errors
from inferq.broker.keys import Keys
from inferq.broker.scripts import LuaScript


class BatchStatus(StrEnum):
    """OpenAI's batch states."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


FINAL = frozenset({BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED,
                   BatchStatus.CANCELLED})  # fmt: skip

# The timestamp field OpenAI sets when a batch enters each state.
_STAMP = {
    BatchStatus.IN_PROGRESS: "in_progress_at",
    BatchStatus.FINALIZING: "finalizing_at",
    BatchStatus.COMPLETED: "completed_at",
    BatchStatus.FAILED: "failed_at",
    BatchStatus.EXPIRED: "expired_at",
    BatchStatus.CANCELLING: "cancelling_at",
    BatchStatus.CANCELLED: "cancelled_at",
}


class RequestCounts(BaseModel):
    """How many requests a batch has, and how many finished each way."""

    total: int = 0
    completed: int = 0
    failed: int = 0


BATCH_ID = re.compile(r"^batch_[0-9a-f]{24}$")


class BatchObject(BaseModel):
    """A batch as OpenAI describes one."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: dict[str, Any] | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts = Field(default_factory=RequestCounts)
    metadata: dict[str, str] | None = None


# KEYS: record, active set. ARGV: new status, final (0/1), batch id, then field/value pairs; the
# statuses it may leave from follow a "--" marker. Returns 1 when the status changed.
_TRANSITION = LuaScript("""
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return 0 end
local marker = 0
for i = 4, #ARGV do if ARGV[i] == '--' then marker = i end end
local allowed = false
for i = marker + 1, #ARGV do if ARGV[i] == current then allowed = true end end
if not allowed then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
for i = 4, marker - 1, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[2] == '1' then redis.call('SREM', KEYS[2], ARGV[3]) end
return 1
""")


def _encode(value: Any) -> bytes:
    return orjson.dumps(value)


async def create_batch(
    redis: Redis,
    keys: Keys,
    *,
    endpoint: str,
    input_file_id: str,
    completion_window: str,
    window_seconds: float,
    metadata: dict[str, str] | None,
) -> BatchObject:
    """A new batch in `validating`, registered for some API process to drive."""
    now = int(time.time())
    batch = BatchObject(
        id=f"batch_{secrets.token_hex(12)}",
        endpoint=endpoint,
        input_file_id=input_file_id,
        completion_window=completion_window,
        status=BatchStatus.VALIDATING,
        created_at=now,
        expires_at=now + int(window_seconds),
        metadata=metadata,
    )
    fields: dict[Any, Any] = {
        k: _encode(v) for k, v in batch.model_dump(mode="json").items() if k != "status"
    }
    async with translate_errors():
        # On a cluster the three keys are in different slots: the record first, so an id in
        # the index or the active set always names a batch.
        cluster = is_cluster(redis)
        pipe = redis.pipeline(transaction=not cluster)
        pipe.hset(keys.batch_record(batch.id), mapping={**fields, "status": batch.status.value})
        if cluster:
            await pipe.execute()
        pipe.zadd(keys.batch_index(), {batch.id: now})
        pipe.sadd(keys.batch_active(), batch.id)
        await pipe.execute()
    return batch


async def get_batch(redis: Redis, keys: Keys, batch_id: str) -> BatchObject | None:
    """A batch, or None."""
    async with translate_errors():
        raw: Any = await redis.hgetall(keys.batch_record(batch_id))
    return _decode(raw)


def _decode(raw: dict[bytes, bytes]) -> BatchObject | None:
    if not raw:
        return None
    data = {k.decode(): (v.decode() if k == b"status" else orjson.loads(v)) for k, v in raw.items()}
    return BatchObject.model_validate(data)


async def list_batches(
    redis: Redis, keys: Keys, *, limit: int, after: str | None
) -> tuple[list[BatchObject], bool]:
    """Batches newest first, after the batch `after`; and whether more follow."""
    async with translate_errors():
        start = 0
        if after:
            rank: Any = await redis.zrevrank(keys.batch_index(), after)
            start = rank + 1 if rank is not None else 0
        ids: list[Any] = await redis.zrevrange(keys.batch_index(), start, start + limit)
        pipe = redis.pipeline(transaction=False)
        for batch_id in ids:
            pipe.hgetall(keys.batch_record(batch_id.decode()))
        rows = await pipe.execute()
    batches = [b for b in (_decode(r) for r in rows) if b is not None]
    return batches[:limit], len(batches) > limit


async def transition(
    redis: Redis,
    keys: Keys,
    batch_id: str,
    to: BatchStatus,
    *,
    allowed_from: set[BatchStatus],
    **fields: Any,
) -> bool:
    """Move a batch to `to` if it is in one of `allowed_from`, stamping the time and setting
    `fields`; False when its status was something else (someone else moved it)."""
    values = dict(fields)
    if to in _STAMP:
        values[_STAMP[to]] = int(time.time())
    args: list[Any] = [to.value, "1" if to in FINAL else "0", batch_id]
    for name, value in values.items():
        args += [name, _encode(value)]
    args += ["--", *(s.value for s in allowed_from)]
    async with translate_errors():
        if not is_cluster(redis):
            record_keys = [keys.batch_record(batch_id), keys.batch_active()]
            return bool(await _TRANSITION(redis, record_keys, args))
        # On a cluster the active set is in another slot: it is left after the record (a
        # crash between leaves a final batch listed as active, which the driver skips).
        args[1] = "0"
        changed = await _TRANSITION(redis, [keys.batch_record(batch_id)], args)
        if changed and to in FINAL:
            await redis.srem(keys.batch_active(), batch_id)
    return bool(changed)


async def update(redis: Redis, keys: Keys, batch_id: str, **fields: Any) -> None:
    """Set fields that do not change the status (request counts, errors)."""
    async with translate_errors():
        await redis.hset(
            keys.batch_record(batch_id), mapping={k: _encode(v) for k, v in fields.items()}
        )


async def mark_expiring(redis: Redis, keys: Keys, batch_id: str) -> None:
    """The completion window has passed: the batch ends `expired` once what runs has finished."""
    async with translate_errors():
        await redis.hset(keys.batch_record(batch_id), "_expiring", "1")


async def is_expiring(redis: Redis, keys: Keys, batch_id: str) -> bool:
    """Whether `mark_expiring` was called."""
    async with translate_errors():
        return bool(await redis.hexists(keys.batch_record(batch_id), "_expiring"))


async def active_batches(redis: Redis, keys: Keys) -> list[str]:
    """Ids of batches not yet final."""
    async with translate_errors():
        ids: Any = await redis.smembers(keys.batch_active())
    return sorted(i.decode() for i in ids)


async def take_lease(redis: Redis, keys: Keys, batch_id: str, owner: str, ttl: float) -> bool:
    """Become (or stay) the driver of a batch for `ttl` seconds; False if another process is."""
    key = keys.batch_lease(batch_id)
    async with translate_errors():
        if await redis.set(key, owner, nx=True, px=int(ttl * 1000)):
            return True
        return bool(await _RENEW(redis, [key], [owner, int(ttl * 1000)]))


_RENEW = LuaScript("""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
""")


async def drop_lease(redis: Redis, keys: Keys, batch_id: str, owner: str) -> None:
    """Stop driving a batch (so another process may take it at once)."""
    async with translate_errors():
        await _DROP(redis, [keys.batch_lease(batch_id)], [owner])


_DROP = LuaScript("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")
