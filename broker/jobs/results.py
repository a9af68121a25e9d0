"""Durable results: a record per finished job (with a TTL) and, per batch submission, a stream
of the jobs that finished, its counters and its cancel flag.

Workers write a result in the same MULTI that acknowledges the job, so a job is never
acknowledged without its result, and a result is never written twice: a client that went away
and comes back reads what finished meanwhile.
"""

import math
import re
import time
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel

from inferq.broker.connection import Redis, is_cluster, translate_errors
from inferq.broker.keys import Keys, beside
from inferq.broker.messages import ErrorInfo, Job, JobKind, Reply, ReplyKind
from inferq.broker.scripts import LuaScript

# A submission id goes into key names (and their hash tag): no braces, no spaces.
SUBMISSION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


class Outcome(BaseModel):
    """A finished job's result record: its terminal reply (DONE with the response body, usage
    and cost; or ERROR) and whose request it was."""

    job: str
    custom_id: str | None = None
    submission: str | None = None
    model: str
    kind: JobKind = JobKind.CHAT
    reply: Reply
    finished: float

    @property
    def ok(self) -> bool:
        """True when the backend answered."""
        return self.reply.kind is ReplyKind.DONE

    @property
    def status(self) -> int:
        """The HTTP status the request would have had: 200, or its error's."""
        return self.reply.error.status if self.reply.error else 200

    @property
    def response(self) -> dict[str, Any] | None:
        """The OpenAI response body of a successful request."""
        return self.reply.response

    @property
    def error(self) -> ErrorInfo | None:
        """The error of a failed request."""
        return self.reply.error

    def encode(self) -> bytes:
        """Serialize for the record."""
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))


def outcome_of(job: Job, reply: Reply) -> Outcome:
    """The record for `job` finished with `reply`."""
    return Outcome(
        job=job.id,
        custom_id=job.custom_id,
        submission=job.submission,
        model=job.model,
        kind=job.kind,
        reply=reply,
        finished=time.time(),
    )


def failure(
    job_id: str,
    error: ErrorInfo,
    *,
    submission: str,
    custom_id: str,
    model: str = "",
    kind: JobKind = JobKind.CHAT,
) -> Outcome:
    """The result of a request that no worker answered (refused before it was queued)."""
    return Outcome(
        job=job_id,
        custom_id=custom_id,
        submission=submission,
        model=model,
        kind=kind,
        reply=Reply(job=job_id, seq=0, kind=ReplyKind.ERROR, error=error),
        finished=time.time(),
    )


def expired(submission: str, job_id: str, custom_id: str) -> Outcome:
    """What stands for a result whose record expired before it was read."""
    error = ErrorInfo(
        status=410,
        type="expired",
        code="result_expired",
        message="the request finished, but its result record has expired (result_ttl)",
    )
    return failure(job_id, error, submission=submission, custom_id=custom_id)


def cancelled_result(job: Job) -> Reply | None:
    """What a job cancelled before it finished leaves: nothing when its client left (no
    record), else an error result, so its submitter never waits for one that will not come."""
    if job.result_ttl is None:
        return None
    error = ErrorInfo(
        status=499,
        type="cancelled",
        code="batch_cancelled",
        message="the request was cancelled before it finished",
    )
    return Reply(
        job=job.id,
        seq=job.seq,
        kind=ReplyKind.ERROR,
        group=job.group,
        error=error,
        attempts=len(job.attempts) + 1,
    )


# The first result of a job stands: a job run twice (a stalled worker's job reclaimed and run
# again) or settled by its submitter while a worker still ran it is recorded, streamed and
# counted once, and its usage added once to the day's totals (/usage, budgets). KEYS: result,
# results stream, submission hash, submission jobs (the result key again for a job of no
# submission), the day's usage index, then N usage hashes. ARGV: record, ttl, job id,
# custom_id, ok (0/1), in a submission (0/1), N, errors (0/1), prompt tokens, completion
# tokens, cost, usage ttl, then the N index members. A job of a virtual key with a budget adds
# its key's spend counter for the period as a last KEYS entry (issue 12).
_STORE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) == false then return 0 end
if ARGV[6] == '1' then
  redis.call('XADD', KEYS[2], '*', 'job', ARGV[3], 'custom_id', ARGV[4], 'ok', ARGV[5])
  redis.call('HINCRBY', KEYS[3], ARGV[5] == '1' and 'succeeded' or 'failed', 1)
  for i = 2, 4 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
end
local n = tonumber(ARGV[7])
for i = 1, n do
  local k = KEYS[5 + i]
  redis.call('HINCRBY', k, 'requests', 1)
  redis.call('HINCRBY', k, 'errors', ARGV[8])
  redis.call('HINCRBY', k, 'prompt_tokens', ARGV[9])
  redis.call('HINCRBY', k, 'completion_tokens', ARGV[10])
  redis.call('HINCRBYFLOAT', k, 'cost', ARGV[11])
  redis.call('EXPIRE', k, ARGV[12])
  redis.call('SADD', KEYS[5], ARGV[12 + i])
end
if n > 0 then redis.call('EXPIRE', KEYS[5], ARGV[12]) end
if #KEYS > 5 + n then
  redis.call('INCRBYFLOAT', KEYS[6 + n], ARGV[11])
  redis.call('EXPIRE', KEYS[6 + n], ARGV[12])
end
return 1
"""
# API key dimension of batch usage: the client reached the queue, not the API.
BATCH_KEY = "batch"
_USAGE_DAYS = 400


@dataclass(frozen=True)
class _Effects:
    """What storing a job's result changes besides its record."""

    record: str
    outcome: Outcome
    ttl: int
    usage_day: str
    dims: list[tuple[str, str]]
    usage_keys: list[str]  # one per dimension, then the key's spend counter if it has a budget
    prompt_tokens: int
    completion_tokens: int
    cost: float


def _effects(keys: Keys, job: Job, reply: Reply, provider: str) -> _Effects:
    outcome = outcome_of(job, reply)
    # Usage counts what reached a backend (not requests cancelled or refused before).
    day = time.strftime("%Y-%m-%d", time.gmtime())
    key = job.key or BATCH_KEY  # a virtual key's batch work counts as that key's usage
    dims = [("group", reply.group or job.group), ("deployment", reply.deployment or ""),
            ("provider", provider), ("key", key)] if reply.deployment else []  # fmt: skip
    dims = [(d, v) for d, v in dims if v]
    usage_keys = [keys.usage(day, d, v) for d, v in dims]
    if job.key and job.budget_period and reply.deployment:
        usage_keys.append(keys.key_spend(job.key, job.budget_period))
    usage = reply.usage or {}
    return _Effects(
        record=keys.result(job.id),
        outcome=outcome,
        ttl=math.ceil(job.result_ttl or 0),
        usage_day=day,
        dims=dims,
        usage_keys=usage_keys,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cost=reply.cost or 0.0,
    )


def store(pipe: Any, keys: Keys, job: Job, reply: Reply, *, provider: str = "") -> None:
    """Queue on `pipe` (a MULTI that also acknowledges the job) the script that makes `reply`
    the durable result of `job`, unless it has one: its record, and its entry on the
    submission's results stream. (EVAL, not EVALSHA: inside MULTI a NOSCRIPT cannot be
    retried; the server caches the script anyway.)"""
    if job.result_ttl is None:
        return
    fx = _effects(keys, job, reply, provider)
    sid = job.submission
    others = (
        [keys.submission_results(sid), keys.submission(sid), keys.submission_jobs(sid)]
        if sid
        else [fx.record] * 3
    )
    args = [fx.outcome.encode(), fx.ttl, job.id, job.custom_id or "", int(fx.outcome.ok),
            int(bool(sid)), len(fx.dims), int(not fx.outcome.ok), fx.prompt_tokens,
            fx.completion_tokens, fx.cost, _USAGE_DAYS * 86400,
            *(f"{d}\t{v}" for d, v in fx.dims)]  # fmt: skip
    pipe.eval(_STORE, 5 + len(fx.usage_keys), fx.record, *others,
              keys.usage_index(fx.usage_day), *fx.usage_keys, *args)  # fmt: skip


# On a cluster the record, the submission's keys and each usage counter live in different
# slots, so `store`'s one script becomes ordered steps, each guarded by a marker in its own
# slot: the record first (SET NX: the first result stands), then each effect of the record
# that stands, once per job however often a step is repeated (a worker that died between
# steps leaves the job pending; whoever finishes it repeats them all, and only the missing
# ones take effect). The job is acknowledged after the last step.
_SUBMISSION_ONCE = LuaScript("""
if redis.call('SADD', KEYS[4], ARGV[1]) == 0 then return 0 end
if ARGV[2] ~= '' then redis.call('HSETNX', KEYS[3], ARGV[2], ARGV[1]) end
redis.call('XADD', KEYS[1], '*', 'job', ARGV[1], 'custom_id', ARGV[2], 'ok', ARGV[3])
redis.call('HINCRBY', KEYS[2], ARGV[3] == '1' and 'succeeded' or 'failed', 1)
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return 1
""")
_USAGE_ONCE = LuaScript("""
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[7]) == false then return 0 end
if ARGV[1] == 'spend' then
  redis.call('INCRBYFLOAT', KEYS[1], ARGV[5])
else
  redis.call('HINCRBY', KEYS[1], 'requests', 1)
  redis.call('HINCRBY', KEYS[1], 'errors', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'prompt_tokens', ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'completion_tokens', ARGV[4])
  redis.call('HINCRBYFLOAT', KEYS[1], 'cost', ARGV[5])
end
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
""")
# How long a step's marker is kept: longer than any job is retried.
_ONCE_TTL = 7 * 86400


async def store_apart(
    redis: Redis, keys: Keys, job: Job, reply: Reply, *, provider: str = ""
) -> None:
    """`store` for a Redis Cluster, in ordered idempotent steps (before the job is acked)."""
    if job.result_ttl is None:
        return
    fx = _effects(keys, job, reply, provider)
    async with translate_errors():
        outcome = await _record_once(redis, fx.record, fx.outcome, fx.ttl)
        if outcome is not fx.outcome:  # an earlier holder's result stands: its effects
            fx = _effects(keys, job, outcome.reply, provider)
        if job.submission:
            await _count_in_submission(redis, keys, job.submission, outcome, fx.ttl)
        if not fx.dims:
            return
        pipe = redis.pipeline(transaction=False)
        for index, usage_key in enumerate(fx.usage_keys):
            kind = "spend" if index >= len(fx.dims) else "usage"
            _USAGE_ONCE.queue(
                pipe,
                [usage_key, beside(usage_key, f"counted:{job.id}")],
                [
                    kind,
                    int(not outcome.ok),
                    fx.prompt_tokens,
                    fx.completion_tokens,
                    fx.cost,
                    _USAGE_DAYS * 86400,
                    _ONCE_TTL,
                ],
            )
        index_key = keys.usage_index(fx.usage_day)
        pipe.sadd(index_key, *(f"{d}\t{v}" for d, v in fx.dims))
        pipe.expire(index_key, _USAGE_DAYS * 86400)
        await pipe.execute()


async def _record_once(redis: Redis, record: str, outcome: Outcome, ttl: int) -> Outcome:
    """Make `outcome` the job's record unless it has one; the record that stands."""
    if await redis.set(record, outcome.encode(), nx=True, ex=ttl):
        return outcome
    raw = await redis.get(record)
    return Outcome.model_validate_json(raw) if raw else outcome


async def _count_in_submission(
    redis: Redis, keys: Keys, sid: str, outcome: Outcome, ttl: int
) -> None:
    await _SUBMISSION_ONCE(
        redis,
        [
            keys.submission_results(sid),
            keys.submission(sid),
            keys.submission_jobs(sid),
            keys.submission_counted(sid),
        ],
        [outcome.job, outcome.custom_id or "", int(outcome.ok), ttl],
    )


# Store a result nobody ran (a request refused before it was queued) unless one exists: one
# result per request, however often a client retries.
_STORE_ONCE = LuaScript("""
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) == false then return 0 end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('XADD', KEYS[3], '*', 'job', ARGV[4], 'custom_id', ARGV[3], 'ok', '0')
redis.call('HINCRBY', KEYS[4], 'failed', 1)
for i = 2, 4 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
return 1
""")


async def store_refusal(redis: Redis, keys: Keys, outcome: Outcome, ttl: float) -> Outcome:
    """Record a request of a submission that was never queued (invalid, cancelled) as failed;
    returns the record that stands (an earlier one, if the request was recorded before)."""
    assert outcome.submission is not None and outcome.custom_id is not None
    ttl_s = math.ceil(ttl)
    sid = outcome.submission
    if is_cluster(redis):  # the record and the submission are in different slots
        async with translate_errors():
            standing = await _record_once(redis, keys.result(outcome.job), outcome, ttl_s)
            await _count_in_submission(redis, keys, sid, standing, ttl_s)
        return standing
    async with translate_errors():
        stored = await _STORE_ONCE(
            redis,
            [
                keys.result(outcome.job),
                keys.submission_jobs(sid),
                keys.submission_results(sid),
                keys.submission(sid),
            ],
            [outcome.encode(), math.ceil(ttl), outcome.custom_id, outcome.job],
        )
    if stored:
        return outcome
    return (await records(redis, keys, [outcome.job]))[outcome.job] or outcome


async def records(redis: Redis, keys: Keys, job_ids: list[str]) -> dict[str, Outcome | None]:
    """The result records of `job_ids` (None where there is none, or it expired)."""
    if not job_ids:
        return {}
    async with translate_errors():
        pipe = redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.get(keys.result(job_id))
        raw = await pipe.execute()
    return {
        job_id: Outcome.model_validate_json(data) if data else None
        for job_id, data in zip(job_ids, raw, strict=True)
    }


@dataclass(frozen=True)
class Finished:
    """One entry of a submission's results stream: `cursor` is its position, to read on from."""

    cursor: str
    job: str
    custom_id: str
    ok: bool


async def finished(
    redis: Redis,
    keys: Keys,
    submission_id: str,
    cursor: str,
    *,
    count: int,
    block_ms: int | None,
) -> list[Finished]:
    """The submission's jobs that finished after `cursor` ("0-0": from the start), waiting up to
    `block_ms` for the first (None: not at all)."""
    async with translate_errors():
        reply: Any = await redis.xread(
            {keys.submission_results(submission_id): cursor}, count=count, block=block_ms
        )
    out: list[Finished] = []
    for _stream, entries in reply or []:
        for entry_id, fields in entries:
            out.append(
                Finished(
                    cursor=entry_id.decode(),
                    job=fields.get(b"job", b"").decode(),
                    custom_id=fields.get(b"custom_id", b"").decode(),
                    ok=fields.get(b"ok") == b"1",
                )
            )
    return out


@dataclass(frozen=True)
class Progress:
    """Counts of one submission: requests queued, results so far, and its state."""

    submitted: int
    succeeded: int
    failed: int
    cancelled: bool
    closed: bool  # every request of it has been submitted

    @property
    def finished(self) -> int:
        """Requests with a result."""
        return self.succeeded + self.failed

    @property
    def done(self) -> bool:
        """Every request has been submitted and has its result."""
        return self.closed and self.finished >= self.submitted


async def progress(redis: Redis, keys: Keys, submission_id: str) -> Progress:
    """Where a submission stands."""
    async with translate_errors():
        pipe = redis.pipeline(transaction=False)
        pipe.hgetall(keys.submission(submission_id))
        pipe.hlen(keys.submission_jobs(submission_id))
        meta, submitted = await pipe.execute()
    fields = {k.decode(): v.decode() for k, v in meta.items()}
    return Progress(
        submitted=int(submitted),
        succeeded=int(fields.get("succeeded", 0)),
        failed=int(fields.get("failed", 0)),
        cancelled=fields.get("cancelled") == "1",
        closed=fields.get("closed") == "1",
    )


async def mark(redis: Redis, keys: Keys, submission_id: str, flag: str, ttl: float) -> None:
    """Set a flag of the submission (`closed`, `cancelled`), renewing its expiry."""
    key = keys.submission(submission_id)
    async with translate_errors():
        pipe = redis.pipeline(transaction=True)
        pipe.hset(key, flag, "1")
        pipe.expire(key, math.ceil(ttl))
        await pipe.execute()


async def is_cancelled(redis: Redis, keys: Keys, submission_id: str) -> bool:
    """True once the submission was cancelled: its queued jobs are skipped."""
    async with translate_errors():
        return await redis.hget(keys.submission(submission_id), "cancelled") == b"1"
