"""Direct submission: put batch requests on the queue without HTTP and collect their results.

A submission is a named set of requests (custom_id → OpenAI request body). Each becomes a job in
the batch lane of its model's group, routed exactly as the API routes it (aliases, fallback
chains), with an id derived from the submission id and its custom_id. At most `window` jobs are
in flight at once; results are yielded as they finish, read from the submission's results stream
and the jobs' durable records. Running a submission again skips requests that already have a
result (it yields the stored one) or are still in flight (it waits for them), so a client that
crashed or was interrupted loses nothing and recomputes nothing.

Under a virtual key the batch lane is shared fairly: the submission keeps at most its key's fair
share of each group's batch slots queued or running there (broker/tenants/shares.py, times the
key's weight), so another key's batch job waits behind a few of its jobs, not behind its
backlog; and once the key's budget is spent, the requests not yet queued end with
`budget_exceeded` (those already queued finish).

    submitter = Submitter(redis, Keys(config.fabric.key_prefix), config)
    requests = [BatchRequest("q1", JobKind.CHAT, {"model": "local-model", "messages": [...]})]
    async for outcome in submitter.run("nightly-2026-11-27", requests, window=64):
        print(outcome.custom_id, outcome.status, outcome.response)
"""

import asyncio
import hashlib
import math
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from inferq.broker.bodies import backend_fields, check_body
from inferq.broker.connection import Redis, is_cluster, translate_errors
from inferq.broker.errors import BrokerError, InvalidBody
from inferq.broker.jobs.queue import ensure_group
from inferq.broker.jobs.results import (
    SUBMISSION_ID,
    Outcome,
    Progress,
    expired,
    failure,
    finished,
    mark,
    progress,
    records,
    store_refusal,
)
from inferq.broker.keys import JOB_FIELD, Keys, beside
from inferq.broker.messages import ErrorInfo, Job, JobKind, Lane
from inferq.broker.replicas import ReplicaAcks, confirm
from inferq.broker.scripts import LuaScript
from inferq.broker.tenants import limits, teams
from inferq.broker.tenants.access import NotPermitted, restrict
from inferq.broker.tenants.shares import BATCH_VIEW, fair_cap, write_shares
from inferq.broker.tenants.vkeys import KeyRecord
from inferq.config import GatewayConfig
from inferq.config.errors import NoUsableGroup, RouteError, UnknownModel

# How long one wait for results may block (a stop request is noticed within this).
_WAIT_MS = 500
# Results read per round trip.
_READ_COUNT = 500

# Enqueue one request of a submission unless it already has a result (1) or was queued before
# (2); not when the submission was cancelled (3) or the lane is full (4). 0: queued now.
_ENQUEUE = LuaScript("""
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 2 end
if redis.call('HGET', KEYS[3], 'cancelled') == '1' then return 3 end
if redis.call('XLEN', KEYS[4]) >= tonumber(ARGV[4]) then return 4 end
redis.call('XADD', KEYS[4], '*', ARGV[5], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return 0
""")
_QUEUED, _HAS_RESULT, _IN_FLIGHT, _CANCELLED, _FULL = range(5)

# On a cluster the submission's keys and the group's stream are in different slots: the
# submission is asked first (_ENQUEUE_CHECK), then the job is appended once (a marker beside
# the stream makes a repeated append after a crash a no-op), then the submission records it.
_ENQUEUE_CHECK = LuaScript("""
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 2 end
if redis.call('HGET', KEYS[2], 'cancelled') == '1' then return 3 end
return 0
""")
_APPEND_ONCE = LuaScript("""
if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 4 end
redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[3])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[4])
return 0
""")


@dataclass(frozen=True)
class BatchRequest:
    """One request of a submission: the client's name for it, its endpoint and its body."""

    custom_id: str
    kind: JobKind
    body: dict[str, Any]


def job_id_for(submission_id: str, custom_id: str) -> str:
    """The job id of a request: the same for the same submission and custom_id, so a request
    submitted again is recognised."""
    digest = hashlib.sha256(f"{submission_id}\0{custom_id}".encode()).hexdigest()[:20]
    return f"{submission_id}.{digest}"


def check_submission_id(submission_id: str) -> None:
    """Raise ValueError unless `submission_id` can name a submission (it goes into key names)."""
    if not SUBMISSION_ID.match(submission_id):
        raise ValueError(
            f"invalid submission id {submission_id!r}: use 1-100 of A-Z a-z 0-9 _ . : -"
        )


@dataclass
class _Collector:
    """Reads a submission's results stream on from `cursor`, keeping what this run awaits."""

    redis: Redis
    keys: Keys
    submission: str
    stop: asyncio.Event | None
    pending: dict[str, str] = field(default_factory=dict)  # job id → custom_id
    group_of: dict[str, str] = field(default_factory=dict)  # job id → group (under a key)
    per_group: dict[str, int] = field(default_factory=dict)  # jobs awaited per group
    cursor: str = "0-0"
    interrupted: bool = False  # stopped before every request was submitted

    @property
    def stopped(self) -> bool:
        """The caller asked to stop."""
        return self.stop is not None and self.stop.is_set()

    async def collect(self, block_ms: int | None) -> list[Outcome]:
        """Results of awaited jobs that finished since the last call."""
        entries = await finished(
            self.redis,
            self.keys,
            self.submission,
            self.cursor,
            count=_READ_COUNT,
            block_ms=block_ms,
        )
        if not entries:
            return []
        self.cursor = entries[-1].cursor
        wanted = [e for e in entries if e.job in self.pending]
        stored = await records(self.redis, self.keys, [e.job for e in wanted])
        out = []
        for entry in wanted:
            custom_id = self.pending.pop(entry.job)
            group = self.group_of.pop(entry.job, None)
            if group is not None:
                self.per_group[group] -= 1
            out.append(stored[entry.job] or expired(self.submission, entry.job, custom_id))
        return out


class Submitter:
    """Submits batch requests straight onto the queue and collects their results."""

    def __init__(
        self, redis: Redis, keys: Keys, config: GatewayConfig, tenant: KeyRecord | None = None
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._config = config
        self._tenant = tenant  # the virtual key the work runs under (None: the operator's)
        self._groups: set[str] = set()  # groups whose streams this submitter has ensured
        self._weight = tenant.priority if tenant else 1  # with its team's, from `run`
        self._over_budget: ErrorInfo | None = None  # set once the key's budget is spent
        self._ticked = 0.0  # when the budget was last read and the view last written
        self._shown = ""  # the name this run's fair-share view is written under

    async def run(
        self,
        submission_id: str,
        requests: Iterable[BatchRequest] | AsyncIterable[BatchRequest],
        *,
        window: int = 256,
        stop: asyncio.Event | None = None,
    ) -> AsyncIterator[Outcome]:
        """Submit `requests` under `submission_id`, at most `window` in flight, and yield one
        result for each as it finishes (invalid requests and duplicate custom_ids included, as
        errors). When `stop` is set: submit no more, yield what has finished, and return; the
        rest carry on in the fabric, and running again collects them."""
        check_submission_id(submission_id)
        if window < 1:
            raise ValueError("window must be at least 1")
        collector = _Collector(self._redis, self._keys, submission_id, stop)
        if self._tenant is not None:
            self._weight = await teams.weight_of(self._redis, self._keys, self._tenant)
            self._shown = f"{BATCH_VIEW}{submission_id}"
            await self._tick(collector)  # a key over its budget queues nothing
        try:
            async for outcome in self._submit_all(submission_id, requests, collector, window):
                yield outcome
            if not collector.interrupted:
                await mark(self._redis, self._keys, submission_id, "closed", self._ttl)
            while collector.pending and not collector.stopped:
                await self._tick(collector)
                for outcome in await collector.collect(_WAIT_MS):
                    yield outcome
            for outcome in await collector.collect(None):
                yield outcome
        finally:
            if self._shown:
                with suppress(BrokerError):
                    await write_shares(self._redis, self._keys, self._shown, {})

    def _cap(self, group: str) -> int | None:
        """Jobs this submission may have queued or running on `group`: its key's fair share
        of the batch slots the config gives the group (None: the operator's, no cap)."""
        if self._tenant is None:
            return None
        fabric = self._config.fabric
        deployments = self._config.groups.get(group, ())
        slots = sum(fabric.batch_slots(d.max_parallel_requests) for d in deployments)
        return fair_cap(slots, self._weight)

    async def _tick(self, collector: _Collector) -> None:
        """Once a second under a key: read its spend against its budget, and write this
        submission's share of each group for `inferq status`."""
        tenant = self._tenant
        now = time.time()
        if tenant is None or now - self._ticked < 1.0:
            return
        self._ticked = now
        if tenant.max_budget is not None and self._over_budget is None:
            over = await limits.over_budget(self._redis, self._keys, tenant, now)
            if over is not None:
                self._over_budget = ErrorInfo(
                    status=429, type="budget_exceeded", code="budget_exceeded",
                    message=limits.budget_message(tenant, *over, now=now)
                    + " This request was not run.",
                )  # fmt: skip
        view = {g: {tenant.key_id: [n, 0]} for g, n in collector.per_group.items() if n}
        await write_shares(self._redis, self._keys, self._shown, view)

    async def _submit_all(
        self,
        submission_id: str,
        requests: Iterable[BatchRequest] | AsyncIterable[BatchRequest],
        collector: _Collector,
        window: int,
    ) -> AsyncIterator[Outcome]:
        """Queue every request, never more than `window` awaiting their results; yields the
        results that come meanwhile."""
        seen: set[str] = set()
        last_look = time.monotonic()
        async for request in _each(requests):
            while len(collector.pending) >= window and not collector.stopped:
                await self._tick(collector)
                for outcome in await collector.collect(_WAIT_MS):
                    yield outcome
            if collector.stopped:
                collector.interrupted = True
                return
            if request.custom_id in seen:
                yield _duplicate(submission_id, request)
                continue
            seen.add(request.custom_id)
            async for outcome in self._submit(submission_id, request, collector):
                yield outcome
            if time.monotonic() - last_look > 0.1:  # pick up results as they come
                last_look = time.monotonic()
                await self._tick(collector)
                for outcome in await collector.collect(None):
                    yield outcome

    async def _submit(
        self, submission_id: str, request: BatchRequest, collector: _Collector
    ) -> AsyncIterator[Outcome]:
        """Queue one request; yields its result when it has one already (or is refused)."""
        job_id = job_id_for(submission_id, request.custom_id)
        try:
            job = self._job(submission_id, job_id, request)
        except (InvalidBody, RouteError) as exc:
            yield await self._refuse(submission_id, job_id, request, _refusal(exc))
            return
        await self._ensure(job.group)
        cap = self._cap(job.group)
        async for outcome in self._await_share(job.group, cap, collector):
            yield outcome
        if collector.interrupted:
            return
        if self._over_budget is not None:
            yield await self._refuse(submission_id, job_id, request, self._over_budget)
            return
        while True:
            status = await self._enqueue(job)
            if status != _FULL:
                break
            # The batch lane is at its limit (other submitters): wait for room, collecting.
            if collector.stopped:
                collector.interrupted = True
                return
            for outcome in await collector.collect(_WAIT_MS):
                yield outcome
        if status == _HAS_RESULT:
            stored = (await records(self._redis, self._keys, [job_id]))[job_id]
            yield stored or expired(submission_id, job_id, request.custom_id)
        elif status == _CANCELLED:
            error = ErrorInfo(
                status=499,
                type="cancelled",
                code="batch_cancelled",
                message="the submission was cancelled before this request was queued",
            )
            yield await self._refuse(submission_id, job_id, request, error)
        else:
            collector.pending[job_id] = request.custom_id
            if cap is not None:
                collector.group_of[job_id] = job.group
                collector.per_group[job.group] = collector.per_group.get(job.group, 0) + 1

    async def _ensure(self, group: str) -> None:
        """The group's streams exist (looked at once per submitter)."""
        if group not in self._groups:
            await ensure_group(self._redis, self._keys, group)
            self._groups.add(group)

    async def _await_share(
        self, group: str, cap: int | None, collector: _Collector
    ) -> AsyncIterator[Outcome]:
        """While the key has its fair share of the group's batch slots, wait for one of its
        jobs there to end, yielding what finishes (stops early when the caller asks)."""
        while cap is not None and collector.per_group.get(group, 0) >= cap:
            if collector.stopped:
                collector.interrupted = True
                return
            await self._tick(collector)
            for outcome in await collector.collect(_WAIT_MS):
                yield outcome

    def _job(self, submission_id: str, job_id: str, request: BatchRequest) -> Job:
        """The batch job for a request, routed as the API routes it; raises InvalidBody or
        RouteError for a request that cannot be served."""
        options = check_body(request.kind, request.body)
        chain = self._config.resolve(options.model, options.fallbacks, options.disable_fallbacks)
        fabric = self._config.fabric
        now = time.time()
        tenant = self._tenant
        if tenant is not None:
            chain = tuple(restrict(tenant, self._config, options.model, chain))
        return Job(
            id=job_id,
            kind=request.kind,
            model=options.model,
            group=chain[0],
            fallbacks=list(chain[1:]),
            body=backend_fields(request.body),
            created=now,
            deadline=now + (options.timeout or fabric.batch_timeout),
            num_retries=options.num_retries,
            lane=Lane.BATCH,
            submission=submission_id,
            custom_id=request.custom_id,
            result_ttl=fabric.result_ttl,
            key=tenant.key_id if tenant else None,
            budget_period=tenant.period(now)[0]
            if tenant and tenant.max_budget is not None
            else None,
        )

    async def _enqueue(self, job: Job) -> int:
        assert job.submission is not None and job.custom_id is not None
        sid = job.submission
        if is_cluster(self._redis):
            status = await self._enqueue_apart(job, sid)
            await confirm(self._redis, self._keys, ReplicaAcks.of(self._config.fabric))
            return status
        async with translate_errors():
            status = await _ENQUEUE(
                self._redis,
                [
                    self._keys.result(job.id),
                    self._keys.submission_jobs(sid),
                    self._keys.submission(sid),
                    self._keys.batch(job.group),
                ],
                [
                    job.custom_id,
                    job.id,
                    job.encode(),
                    self._config.fabric.batch_queue_limit,
                    JOB_FIELD,
                    math.ceil(self._ttl),
                ],
            )
        await confirm(self._redis, self._keys, ReplicaAcks.of(self._config.fabric))
        return int(status)

    async def _enqueue_apart(self, job: Job, sid: str) -> int:
        assert job.custom_id is not None
        ttl = math.ceil(self._ttl)
        async with translate_errors():
            if await self._redis.exists(self._keys.result(job.id)):
                return _HAS_RESULT
            status = int(
                await _ENQUEUE_CHECK(
                    self._redis,
                    [self._keys.submission_jobs(sid), self._keys.submission(sid)],
                    [job.custom_id],
                )
            )
            if status != _QUEUED:
                return status
            stream = self._keys.batch(job.group)
            status = int(
                await _APPEND_ONCE(
                    self._redis,
                    [stream, beside(stream, f"queued:{job.id}")],
                    [self._config.fabric.batch_queue_limit, JOB_FIELD, job.encode(), ttl],
                )
            )
            if status == _FULL:
                return status
            # Queued now, or by a run that died before this step (_IN_FLIGHT): record it.
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(self._keys.submission_jobs(sid), job.custom_id, job.id)
            pipe.expire(self._keys.submission_jobs(sid), ttl)
            await pipe.execute()
        return status

    async def _refuse(
        self, submission_id: str, job_id: str, request: BatchRequest, error: ErrorInfo
    ) -> Outcome:
        model = request.body.get("model")
        outcome = failure(
            job_id,
            error,
            submission=submission_id,
            custom_id=request.custom_id,
            model=model if isinstance(model, str) else "",
            kind=request.kind,
        )
        return await store_refusal(self._redis, self._keys, outcome, self._ttl)

    @property
    def _ttl(self) -> float:
        return self._config.fabric.result_ttl

    async def results(
        self, submission_id: str, since: str = "0-0", *, follow: bool = False
    ) -> AsyncIterator[tuple[str, Outcome]]:
        """The submission's results in the order they finished, after the cursor `since`, each
        with its own cursor (to read on from after a disconnect). With `follow`, wait for more
        until every request has its result (a submission is complete once a `run` has queued
        all of its requests; one that was stopped is not)."""
        check_submission_id(submission_id)
        cursor = since
        while True:
            entries = await finished(
                self._redis,
                self._keys,
                submission_id,
                cursor,
                count=_READ_COUNT,
                block_ms=_WAIT_MS if follow else None,
            )
            if entries:
                stored = await records(self._redis, self._keys, [e.job for e in entries])
                for e in entries:
                    yield e.cursor, stored[e.job] or expired(submission_id, e.job, e.custom_id)
                cursor = entries[-1].cursor
                continue
            if not follow or (await self.progress(submission_id)).done:
                if follow:  # finished meanwhile: read what came after the last look
                    async for item in self.results(submission_id, cursor):
                        yield item
                return

    async def result(self, submission_id: str, custom_id: str) -> Outcome | None:
        """The result of one request, if it has finished."""
        job_id = job_id_for(submission_id, custom_id)
        return (await records(self._redis, self._keys, [job_id]))[job_id]

    async def progress(self, submission_id: str) -> Progress:
        """How many requests are queued, succeeded and failed; cancelled or closed."""
        return await progress(self._redis, self._keys, submission_id)

    async def cancel(self, submission_id: str) -> None:
        """Cancel the submission: workers skip its queued jobs (each gets a `batch_cancelled`
        error result), jobs already running finish, and no more are queued."""
        check_submission_id(submission_id)
        await mark(self._redis, self._keys, submission_id, "cancelled", self._ttl)

    async def settle(self, submission_id: str, *, code: str, message: str) -> int:
        """Give every queued request of the submission that has no result yet an error result
        now: for when no worker may ever take its job (its group has no live worker, and the
        submission was cancelled or expired a while ago). A worker that still finishes one later
        finds the result taken and records nothing. Returns how many it settled."""
        check_submission_id(submission_id)
        async with translate_errors():
            raw: Any = await self._redis.hgetall(self._keys.submission_jobs(submission_id))
        jobs = {job.decode(): custom_id.decode() for custom_id, job in raw.items()}
        have = await records(self._redis, self._keys, list(jobs))
        error = ErrorInfo(status=499, type="cancelled", code=code, message=message)
        settled = 0
        for job_id, custom_id in jobs.items():
            if have.get(job_id) is None:
                outcome = failure(job_id, error, submission=submission_id, custom_id=custom_id)
                settled += (
                    await store_refusal(self._redis, self._keys, outcome, self._ttl) is outcome
                )
        return settled


async def _each(
    requests: Iterable[BatchRequest] | AsyncIterable[BatchRequest],
) -> AsyncIterator[BatchRequest]:
    if isinstance(requests, AsyncIterable):
        async for request in requests:
            yield request
    else:
        for request in requests:
            yield request


def _refusal(exc: InvalidBody | RouteError) -> ErrorInfo:
    if isinstance(exc, InvalidBody):
        return ErrorInfo(
            status=400, type="invalid_request_error", message=exc.message, param=exc.param
        )
    if isinstance(exc, UnknownModel):
        return ErrorInfo(
            status=400,
            type="invalid_request_error",
            code="model_not_found",
            param=exc.param,
            message=str(exc),
        )
    if isinstance(exc, NotPermitted):
        return ErrorInfo(
            status=403, type="permission_denied", code="permission_denied", param="model",
            message=str(exc),
        )  # fmt: skip
    assert isinstance(exc, NoUsableGroup)
    return ErrorInfo(status=503, type="service_unavailable", message=str(exc))


def _duplicate(submission_id: str, request: BatchRequest) -> Outcome:
    error = ErrorInfo(
        status=400,
        type="invalid_request_error",
        code="duplicate_custom_id",
        param="custom_id",
        message=f"custom_id {request.custom_id!r} is used by another request of this batch",
    )
    job_id = job_id_for(submission_id, request.custom_id)
    custom_id, kind = request.custom_id, request.kind
    return failure(job_id, error, submission=submission_id, custom_id=custom_id, kind=kind)
