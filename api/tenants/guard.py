"""What a virtual key may do: which models, how fast, how much in flight, how much spend.

The hot path reads only memory for a key without limits: its record (from the KeyCache) and
the over-budget set this guard refreshes every second in the background. A key with rpm, tpm
or parallel limits pays one Redis script call per request, shared by every API process. What a
request used is written back once a second, in one round trip for all of them.
"""

import asyncio
import logging
import math
import time
from collections import defaultdict
from contextlib import suppress

from inferq.api.accounting.record import UsageRecord
from inferq.api.errors import GatewayError
from inferq.api.tenants.cache import KeyCache
from inferq.api.tenants.fairshare import FairShare
from inferq.broker.connection import Redis
from inferq.broker.errors import BrokerError
from inferq.broker.keys import Keys
from inferq.broker.messages import Job
from inferq.broker.tenants import limits
from inferq.broker.tenants.access import NotPermitted, restrict
from inferq.broker.tenants.shares import read_views, spread, write_shares
from inferq.broker.tenants.vkeys import KeyRecord
from inferq.config import GatewayConfig

log = logging.getLogger("inferq.api")


def period_of(record: KeyRecord, now: float) -> tuple[str, float | None]:
    """The key's current budget period and when it resets (None: never)."""
    return record.period(now)


class PermissionDenied(GatewayError):
    """The key may not use this model or route."""

    status = 403
    type = "permission_denied"


def permit(record: KeyRecord, config: GatewayConfig, job: Job) -> Job:
    """`job` with its chain cut to the groups the key may use; 403 if it may not ask for the
    model at all."""
    if not record.models:
        return job
    chain = [job.group, *job.fallbacks]
    try:
        kept = restrict(record, config, job.model, chain)
    except NotPermitted as exc:
        raise PermissionDenied(str(exc), code="permission_denied", param="model") from None
    if kept == chain:
        return job
    return job.model_copy(update={"group": kept[0], "fallbacks": kept[1:]})


class Guard:
    """Limits and budgets of virtual keys, shared across API processes through Redis."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        cache: KeyCache,
        *,
        fair: FairShare,
        process: str,
        interval: float = 1.0,
    ):
        self._redis = redis
        self._fair = fair
        self._process = process
        self._shown = False  # whether this process's fair-share view is in Redis
        self._keys = keys
        self._cache = cache
        self._interval = interval
        self.over_budget: dict[str, tuple[float, float | None]] = {}  # token → spent, resets
        self._spent: defaultdict[tuple[str, str], float] = defaultdict(float)
        self._finished: list[tuple[str, str, int, float]] = []
        self._task: asyncio.Task[None] | None = None
        self._releasing: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Write usage and refresh budgets in the background."""
        self._task = asyncio.create_task(self._run(), name="key-guard")

    async def stop(self) -> None:
        """Stop, after a last write."""
        if self._task:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        with suppress(BrokerError):
            await self.flush()

    def check_budget(self, record: KeyRecord) -> None:
        """429 `budget_exceeded` while the key has spent its budget for the period."""
        over = self.over_budget.get(record.token)
        if over is None or record.max_budget is None:
            return
        spent, resets = over
        now = time.time()
        headers = {"retry-after": str(max(1, math.ceil(resets - now)))} if resets else {}
        raise GatewayError(
            limits.budget_message(record, spent, resets, now=now),
            status=429,
            type="budget_exceeded",
            code="budget_exceeded",
            headers=headers,
        )

    async def admit(self, record: KeyRecord, job: Job) -> None:
        """Count the request against the key's rpm/tpm/parallel limits; 429 if one is full."""
        now = time.time()
        refused = await limits.admit(
            self._redis, self._keys, record.key_id, now=now, job_id=job.id,
            deadline=job.deadline, rpm=record.rpm_limit, tpm=record.tpm_limit,
            parallel=record.max_parallel_requests,
        )  # fmt: skip
        if refused is None:
            return
        wait = 1 if refused == "max_parallel_requests" else max(1, math.ceil(60 - now % 60))
        raise GatewayError(
            f"This key is at its {refused}; retry in {wait} s.",
            status=429,
            type="rate_limit_error",
            code=refused,
            headers={"retry-after": str(wait)},
        )

    def finished(self, record: KeyRecord, job: Job, rec: UsageRecord, admitted: bool) -> None:
        """A request of the key ended: free its slot, count its tokens and spend (written
        within a second)."""
        now = time.time()
        if admitted:
            # Freed at once, not with the next flush: a client that sends one request after
            # another must find its slot free.
            tokens = rec.prompt_tokens + rec.completion_tokens
            self._finished.append((record.key_id, job.id, tokens, now))
            task = asyncio.get_running_loop().create_task(self._release())
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)
        if rec.cost:
            self._spent[(record.key_id, period_of(record, now)[0])] += rec.cost

    async def _release(self) -> None:
        finished, self._finished = self._finished, []
        try:
            await limits.release(self._redis, self._keys, finished)
        except BrokerError:
            self._finished = finished[-100_000:] + self._finished  # the next flush retries

    async def flush(self) -> None:
        """Write what ended since the last flush (kept for the next try if Redis is away)."""
        finished, spent = self._finished, self._spent
        self._finished, self._spent = [], defaultdict(float)
        try:
            await limits.release(self._redis, self._keys, finished)
            await limits.add_spend(self._redis, self._keys, spent)
        except BrokerError:
            self._finished = finished[-100_000:] + self._finished
            for k, v in spent.items():
                self._spent[k] += v
            raise

    async def refresh(self) -> None:
        """Which cached keys with a budget have spent it this period."""
        now = time.time()
        budgeted = [r for r in self._cache.records() if r.max_budget is not None]
        periods = {r.token: period_of(r, now) for r in budgeted}
        wanted = [(r.key_id, periods[r.token][0]) for r in budgeted]
        spent = await limits.read_spend(self._redis, self._keys, wanted)
        over: dict[str, tuple[float, float | None]] = {}
        for r, w in zip(budgeted, wanted, strict=True):
            assert r.max_budget is not None
            if spent[w] >= r.max_budget:
                over[r.token] = (spent[w], periods[r.token][1])
        self.over_budget = over

    async def _show_shares(self) -> None:
        """Write this process's fair-share view, and learn from the others' on how many
        processes each key's work is spread."""
        view = self._fair.snapshot()
        if view or self._shown:
            await write_shares(self._redis, self._keys, self._process, view)
            self._shown = bool(view)
        self._fair.set_spread(spread(await read_views(self._redis, self._keys), self._process))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
                await self.refresh()
                await self._show_shares()
            except BrokerError as exc:
                log.debug("key limits not written yet: %s", exc)
