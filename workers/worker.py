"""The worker run loop for one deployment: poll → start jobs under a bounded slot count → reap.

Around the loop: heartbeats (so others know we live), promotion of retries whose backoff has
passed, reclaiming jobs of workers whose heartbeat expired, cooldown after repeated failures,
rpm/tpm pacing, and cancellation of jobs whose client went away. Which lane the next jobs come
from (interactive first, batch within its share) is `workers.lanes`.
"""

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable

from inferq.broker.connection import Redis
from inferq.broker.errors import BrokerError
from inferq.broker.jobs.consumer import Delivery, EntryKey, GroupConsumer
from inferq.broker.jobs.queue import ensure_group
from inferq.broker.jobs.results import cancelled_result, is_cancelled
from inferq.broker.keys import Keys
from inferq.broker.messages import Attempt, ErrorInfo, Job, ReplyKind
from inferq.broker.ops.limits import DeploymentLimits
from inferq.broker.ops.registry import WorkerInfo, deregister, heartbeat, served_from
from inferq.broker.replicas import ReplicaAcks
from inferq.config import Deployment, GatewayConfig
from inferq.config.runtime import CRASH_BEFORE_TERMINAL
from inferq.workers.attempt import ReplyWriter, carried_on, resumed, run_attempt
from inferq.workers.errors import ProviderError
from inferq.workers.lanes import LaneScheduler
from inferq.workers.policy import Action, next_step
from inferq.workers.pricing import cost
from inferq.workers.providers import Provider

log = logging.getLogger("inferq.worker")


class DeploymentWorker:
    """Serves one deployment from its group's stream with at most `slots` jobs at once."""

    def __init__(
        self,
        deployment: Deployment,
        config: GatewayConfig,
        redis: Redis,
        provider: Provider,
        *,
        block_ms: int = 1000,
        heartbeat_interval: float = 2.0,
        grace_period: float = 30.0,
        is_cancelled: Callable[[str], bool] | None = None,
        slots: int | None = None,
        crash_at: str | None = None,
    ) -> None:
        self.deployment = deployment
        self._crash_at = crash_at  # fault tests only: see config.runtime
        # The random part: a container restarted with the same hostname and pid is a new
        # consumer, so the old one's pending jobs are seen as a dead worker's and reclaimed.
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}-{deployment.id}"
        self._config = config
        self._redis = redis
        self._keys = Keys(config.fabric.key_prefix)
        self._provider = provider
        self._consumer = GroupConsumer(
            redis,
            self._keys,
            deployment.group,
            self.id,
            deployment.provider.value,
            acks=ReplicaAcks.of(config.fabric),
        )
        self._limits = DeploymentLimits(redis, self._keys, deployment.group, deployment.id)
        self._slots_override = slots  # `inferq worker --concurrency`
        self._slots = slots or deployment.max_parallel_requests
        fabric = config.fabric
        self._lanes = LaneScheduler(fabric.batch_slots(self._slots), fabric.batch_min_share)
        self._block_ms = block_ms
        self._heartbeat_interval = heartbeat_interval
        self._grace = grace_period
        self._is_cancelled = is_cancelled or (lambda _job_id: False)
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancelled: set[str] = set()
        self._cooldown_until = 0.0
        self._orphans = False  # some of our own pending entries have no task serving them
        self._in_flight: set[EntryKey] = set()
        self._started = time.time()
        self.done = 0
        self.failed = 0

    # ---- the loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then finish in-flight jobs within the grace period."""
        await self._wait_for_redis(stop)
        house = asyncio.create_task(self._housekeeping(stop), name=f"housekeeping-{self.id}")
        log.info("worker %s serving %s (%d slots)", self.id, self.deployment.group, self._slots)
        backoff = 0.1
        next_reclaim = 0.0
        while not stop.is_set():
            free = self._slots - len(self._tasks)
            if free <= 0:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                if await self._paused(stop):
                    continue
                deliveries: list[Delivery] = []
                if self._orphans:
                    ours = self._in_flight | self._lanes.held
                    deliveries = await self._consumer.reclaim_own(free, ours)
                    self._orphans = len(deliveries) == free  # more may wait: look again
                if not deliveries and time.monotonic() >= next_reclaim:
                    next_reclaim = time.monotonic() + self._heartbeat_interval
                    deliveries = await self._consumer.reclaim(free)
                if not deliveries:
                    deliveries = await self._read(free)
                if backoff > 0.1:
                    await self._beat()  # Redis is back (maybe empty): say we live at once
                backoff = 0.1
            except BrokerError as exc:
                self._orphans = self._orphans or bool(self._in_flight)
                log.warning("worker %s cannot read jobs: %s", self.id, exc)
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            self._lanes.add(deliveries)
            started = self._lanes.take(free)
            for delivery in started:
                self._start(delivery)
            if started:
                # Let the jobs send their backend requests before the next read goes to Redis
                # (on a shared core, that write can hand the CPU to Redis first).
                await asyncio.sleep(0)
        await self._drain()
        house.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await house
        with contextlib.suppress(BrokerError):  # else the heartbeat TTL removes us anyway
            await deregister(self._redis, self._keys, self.id)
        log.info("worker %s stopped (%d done, %d failed)", self.id, self.done, self.failed)

    @property
    def provider(self) -> Provider:
        """The backend client jobs starting now will use."""
        return self._provider

    def reconfigure(
        self, config: GatewayConfig, deployment: Deployment, provider: Provider
    ) -> None:
        """Take a reloaded config. Jobs already running finish as they started; the next ones
        see the new settings (slots, backend, defaults, retries, fallbacks)."""
        self._config = config
        self.deployment = deployment
        self._provider = provider
        self._consumer.provider = deployment.provider.value
        self._consumer.acks = ReplicaAcks.of(config.fabric)
        self._slots = self._slots_override or deployment.max_parallel_requests
        fabric = config.fabric
        self._lanes.resize(fabric.batch_slots(self._slots), fabric.batch_min_share)

    def cancel(self, job_id: str) -> None:
        """The job's client is gone: abort it if it runs here."""
        task = self._running.get(job_id)
        if task is not None and task.cancel():  # False: it has just ended
            self._cancelled.add(job_id)

    async def _read(self, free: int) -> list[Delivery]:
        pull = self._lanes.plan(free, self._block_ms)
        if pull is None:
            return []
        dep = self.deployment
        if not (dep.rpm or dep.tpm):
            return await self._consumer.read(pull.count, pull.block_ms, pull.lanes)
        granted, wait = await self._limits.grant(pull.count, dep.rpm, dep.tpm)
        if not granted:
            await asyncio.sleep(min(wait, 1.0))
            return []
        deliveries = await self._consumer.read(granted, pull.block_ms, pull.lanes)
        await self._limits.give_back(granted - len(deliveries))
        return deliveries

    async def _paused(self, stop: asyncio.Event) -> bool:
        """True (after a short wait) while this deployment cools down."""
        left = self._cooldown_until - time.monotonic()
        if left <= 0:
            return False
        await _sleep_or_stop(stop, min(left, 0.5))
        return True

    def _start(self, delivery: Delivery) -> None:
        task = asyncio.create_task(self._serve(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        entry, lane = delivery.key, delivery.lane
        self._in_flight.add(entry)
        task.add_done_callback(lambda _t: self._in_flight.discard(entry))
        task.add_done_callback(lambda _t: self._lanes.finished(lane))
        if delivery.job is not None:
            job_id = delivery.job.id
            self._running[job_id] = task
            task.add_done_callback(lambda _t: self._running.pop(job_id, None))

    async def _wait_for_redis(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            try:
                await ensure_group(self._redis, self._keys, self.deployment.group)
                await self._beat()
                return
            except BrokerError as exc:
                log.warning("worker %s waiting for Redis: %s", self.id, exc)
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 2.0)

    async def _drain(self) -> None:
        if not self._tasks:
            return
        log.info("worker %s finishing %d in-flight jobs", self.id, len(self._tasks))
        _done, pending = await asyncio.wait(self._tasks, timeout=self._grace)
        for task in pending:
            task.cancel()  # not acknowledged: stays pending for another worker
        if pending:
            await asyncio.wait(pending)

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        """Heartbeat and cooldown view every interval; promote due retries four times a second."""
        next_beat = 0.0
        while not stop.is_set():
            with contextlib.suppress(BrokerError):  # the read loop reports outages
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self._heartbeat_interval
                    await self._beat()
                    left = await self._limits.cooldown_left()
                    self._cooldown_until = max(self._cooldown_until, time.monotonic() + left)
                await self._consumer.promote_due()
            await _sleep_or_stop(stop, 0.25)

    async def _beat(self) -> None:
        info = WorkerInfo(
            id=self.id,
            group=self.deployment.group,
            deployment=self.deployment.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            slots=self._slots,
            started=self._started,
            in_flight=len(self._tasks),
            done=self.done,
            failed=self.failed,
        )
        await heartbeat(self._redis, self._keys, info, self._heartbeat_interval * 3)

    # ---- one job --------------------------------------------------------------------------

    async def _serve(self, delivery: Delivery) -> None:
        job = delivery.job
        try:
            if job is None:
                await self._poison(delivery)
            elif delivery.times_delivered > self._config.fabric.max_deliveries:
                await self._give_up(delivery, job)
            elif self._is_cancelled(job.id) or (
                job.submission and await is_cancelled(self._redis, self._keys, job.submission)
            ):
                await self._consumer.complete(delivery, job, cancelled_result(job))
            else:
                await self._serve_job(delivery, await self._resume(delivery, job))
        except BrokerError as exc:
            # Not acknowledged: the job stays in our pending list; once Redis answers again the
            # loop takes it back (we are alive, so nobody else would reclaim it).
            about = _tag(job) if job else f"entry {delivery.entry_id.decode()}"
            log.warning("%s: Redis failed mid-job (%s); will retry", about, exc)
            self._orphans = True
        except asyncio.CancelledError:
            if job is None or job.id not in self._cancelled:
                raise  # shutting down: leave the job pending for another worker
            self._cancelled.discard(job.id)
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            log.info("%s: cancelled by its client; backend call aborted", _tag(job))
            with contextlib.suppress(BrokerError):
                await self._consumer.complete(delivery, job, cancelled_result(job))
        finally:
            if job is not None:
                self._cancelled.discard(job.id)  # a cancel that came as the job ended

    async def _resume(self, delivery: Delivery, job: Job) -> Job:
        """A reclaimed stream job carries on after what its client already received."""
        if delivery.times_delivered <= 1 or not job.stream:
            return job
        sent = await self._consumer.progress(job)
        await self._consumer.republish(job, sent)  # on a cluster, recorded may be unsent
        return resumed(job, sent) if sent else job

    async def _serve_job(self, delivery: Delivery, job: Job) -> None:
        picked_up = time.time()
        dep, provider = self.deployment, self._provider  # a reload mid-job changes neither
        writer = ReplyWriter(self._consumer, job, dep.id)
        if job.deadline <= time.time():
            error = ErrorInfo(
                status=504, type="timeout", code="timeout", message="request timed out while queued"
            )
            await self._answer_error(delivery, job, writer, error, None)
            return
        began = time.monotonic()
        try:
            done = await run_attempt(provider, dep, job, writer)
        except ProviderError as exc:
            await self._failed(delivery, job, writer, exc, began)
            return
        except BrokerError:
            raise
        except Exception:
            log.exception("%s: unexpected error on %s", _tag(job), dep.id)
            error = ErrorInfo(status=500, type="api_error", message="internal error in the worker")
            await self._answer_error(delivery, job, writer, error, began)
            return
        usage = done.usage or {}
        done.cost = cost(
            dep, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        )
        done.queue_ms = round((picked_up - job.created) * 1000, 2)
        if self._crash_at == CRASH_BEFORE_TERMINAL:
            os.kill(os.getpid(), signal.SIGKILL)  # the fault tests' death with an answer in hand
        await self._consumer.complete(delivery, job, done)
        self.done += 1
        self._finished(job, 200, began)
        if dep.tpm and done.usage:
            await self._limits.add_tokens(int(done.usage.get("total_tokens") or 0))

    async def _answer_error(
        self,
        delivery: Delivery,
        job: Job,
        writer: ReplyWriter,
        error: ErrorInfo,
        began: float | None,
    ) -> None:
        """End the job with `error` as its answer."""
        self.failed += 1
        await self._consumer.complete(delivery, job, writer.reply(ReplyKind.ERROR, error=error))
        self._finished(job, error.status, began)

    def _finished(self, job: Job, status: int, began: float | None) -> None:
        """The job's last line, at DEBUG: off by default, the hot path pays nothing for it."""
        if log.isEnabledFor(logging.DEBUG):
            backend = (
                f"{(time.monotonic() - began) * 1000:.1f} ms" if began is not None else "not called"
            )
            log.debug(
                "%s: finished on %s, status %d, backend %s",
                _tag(job), self.deployment.id, status, backend,
            )  # fmt: skip

    async def _failed(
        self, delivery: Delivery, job: Job, writer: ReplyWriter, exc: ProviderError, began: float
    ) -> None:
        if exc.retryable:
            await self._count_failure(job)
        step = next_step(
            job,
            exc,
            visible=writer.visible,
            default_retries=self._config.router.num_retries,
            now=time.time(),
        )
        attempts = [
            *job.attempts,
            Attempt(
                group=job.group, deployment=self.deployment.id, error=exc.message, at=time.time()
            ),
        ]
        log.info(
            "%s: failed on %s (%s): %s",
            _tag(job),
            self.deployment.id,
            exc.message,
            step.action.value,
        )
        if step.action is Action.RETRY:
            retry = job.model_copy(update={"attempts": attempts, "retries": job.retries + 1})
            await self._consumer.retry_later(delivery, retry, time.time() + step.delay)
        elif (
            step.action is Action.FALLBACK
            and not writer.tool_output  # a half-sent tool call cannot be carried on
            and (served := await served_from(self._redis, self._keys, job.fallbacks))
        ):
            moved = carried_on(job, seq=writer.seq, text=writer.text, tokens=writer.tokens,
                               attempts=attempts, group=served[0], fallbacks=served[1:],
                               retries=0, finish_reason=writer.finish_reason)  # fmt: skip
            await self._consumer.move_to(delivery, moved)
        else:
            await self._answer_error(delivery, job, writer, exc.info(), began)

    async def _count_failure(self, job: Job) -> None:
        router = self._config.router
        if await self._limits.record_failure(router.allowed_fails, router.cooldown_time):
            log.warning(
                "%s: deployment %s cools down for %gs after %d failures in a minute",
                _tag(job),
                self.deployment.id,
                router.cooldown_time,
                router.allowed_fails + 1,
            )
            self._cooldown_until = time.monotonic() + router.cooldown_time

    async def _give_up(self, delivery: Delivery, job: Job) -> None:
        deliveries = delivery.times_delivered - 1
        message = (
            f"the job was abandoned {deliveries} times by workers that stopped while serving it "
            "(crash, kill or an input that breaks them); it is in the dead-letter stream"
        )
        resumed = await self._resume(delivery, job)
        if resumed.stream and resumed.finish_reason:
            # Its answer was whole before its holders died: it ends as complete, not in error.
            await self._serve_job(delivery, resumed)
            return
        log.error("%s: %s", _tag(job), message)
        self.failed += 1
        error = ErrorInfo(status=502, type="api_error", code="max_deliveries", message=message)
        reply = ReplyWriter(self._consumer, resumed, self.deployment.id).reply(
            ReplyKind.ERROR, error=error
        )
        await self._consumer.dead_letter(delivery, f"max_deliveries: {message}", reply)

    async def _poison(self, delivery: Delivery) -> None:
        log.error("dead-lettering entry %s: %s", delivery.entry_id.decode(), delivery.problem)
        self.failed += 1
        await self._consumer.dead_letter(delivery, delivery.problem or "unreadable")


def _tag(job: Job) -> str:
    """How a log line names a job: `job <id> req <request id>` (`req -` for direct submissions)."""
    return f"job {job.id} req {job.request_id or '-'}"


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
