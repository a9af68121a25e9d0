"""The worker run loop for one deployment: poll → start jobs under a bounded slot count → reap.

A job is acknowledged only after its terminal reply is published (`GroupConsumer.complete`);
anything that goes wrong before that leaves it pending for another worker.
"""

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

from broker.consumer import Delivery, GroupConsumer
from broker.errors import BrokerError
from broker.keys import Keys
from broker.messages import ErrorInfo, Job, Reply, ReplyKind
from broker.queue import ensure_group
from broker.registry import WorkerInfo, deregister, heartbeat
from config import Deployment
from workers.coalesce import Coalescer
from workers.errors import BackendProtocolError, ProviderError
from workers.providers import Provider
from workers.usage import counted_usage

log = logging.getLogger("inferq.worker")

# Fields a client may send that are for the gateway, not the backend.
_GATEWAY_FIELDS = frozenset({"stream_options"})


class ReplyWriter:
    """Numbers and sends one job's reply messages; the terminal one also acknowledges."""

    def __init__(self, consumer: GroupConsumer, delivery: Delivery, job: Job, dep: str) -> None:
        self._consumer = consumer
        self._delivery = delivery
        self._job = job
        self._deployment = dep
        self._seq = 0

    def _reply(self, kind: ReplyKind, **fields: Any) -> Reply:
        reply = Reply(
            job=self._job.id,
            seq=self._seq,
            kind=kind,
            group=self._job.group,
            deployment=self._deployment,
            attempts=len(self._job.attempts) + 1,
            **fields,
        )
        self._seq += 1
        return reply

    async def delta(self, chunks: list[list[dict[str, Any]]]) -> None:
        """Send coalesced chunks to the waiting client (if any)."""
        if self._job.reply_to:
            await self._consumer.publish(
                self._job.reply_to, self._reply(ReplyKind.DELTA, chunks=chunks)
            )

    async def finish(self, kind: ReplyKind, **fields: Any) -> None:
        """Send the terminal message and acknowledge the job."""
        await self._consumer.complete(
            self._delivery, self._job.reply_to, self._reply(kind, **fields)
        )


def backend_body(job: Job, deployment: Deployment) -> dict[str, Any]:
    """The request for the backend: config defaults, overridden by what the client sent."""
    body = dict(deployment.defaults)
    body.update((k, v) for k, v in job.body.items() if v is not None and k not in _GATEWAY_FIELDS)
    body["model"] = deployment.upstream_model
    if job.stream:
        body["stream"] = True
        # Ask for a usage chunk; servers that ignore it (llama.cpp) get their tokens counted.
        body["stream_options"] = {"include_usage": True}
    else:
        body.pop("stream", None)
    return body


class DeploymentWorker:
    """Serves one deployment from its group's stream with at most `slots` jobs at once."""

    def __init__(
        self,
        deployment: Deployment,
        redis: Any,
        keys: Keys,
        provider: Provider,
        *,
        block_ms: int = 1000,
        heartbeat_interval: float = 2.0,
        grace_period: float = 30.0,
    ) -> None:
        self.deployment = deployment
        self.id = f"{socket.gethostname()}-{os.getpid()}-{deployment.id}"
        self._redis = redis
        self._keys = keys
        self._provider = provider
        self._consumer = GroupConsumer(redis, keys, deployment.group, self.id)
        self._slots = deployment.max_parallel_requests
        self._block_ms = block_ms
        self._heartbeat_interval = heartbeat_interval
        self._grace = grace_period
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = time.time()
        self.done = 0
        self.failed = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then finish in-flight jobs within the grace period."""
        beat = asyncio.create_task(self._heartbeats(stop), name=f"heartbeat-{self.id}")
        await self._wait_for_redis(stop)
        log.info("worker %s serving %s (%d slots)", self.id, self.deployment.group, self._slots)
        backoff = 0.1
        while not stop.is_set():
            free = self._slots - len(self._tasks)
            if free <= 0:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                deliveries = await self._consumer.read(free, self._block_ms)
                backoff = 0.1
            except BrokerError as exc:
                log.warning("worker %s cannot read jobs: %s", self.id, exc)
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            for delivery in deliveries:
                task = asyncio.create_task(self._serve(delivery))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        await self._drain()
        beat.cancel()
        with contextlib.suppress(BrokerError):  # else the heartbeat TTL removes us anyway
            await deregister(self._redis, self._keys, self.id)
        log.info("worker %s stopped (%d done, %d failed)", self.id, self.done, self.failed)

    async def _wait_for_redis(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            try:
                await ensure_group(self._redis, self._keys, self.deployment.group)
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

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        ttl = self._heartbeat_interval * 3
        while not stop.is_set():
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
            with contextlib.suppress(BrokerError):  # the read loop reports the outage
                await heartbeat(self._redis, self._keys, info, ttl)
            await _sleep_or_stop(stop, self._heartbeat_interval)

    async def _serve(self, delivery: Delivery) -> None:
        job = delivery.job
        if job is None:
            await self._poison(delivery)
            return
        writer = ReplyWriter(self._consumer, delivery, job, self.deployment.id)
        try:
            error = await self._attempt(job, writer)
        except BrokerError as exc:
            # Not acknowledged: the job stays pending and is served again later.
            log.warning("job %s: Redis failed mid-job (%s); left pending", job.id, exc)
            return
        if error is None:
            self.done += 1
            return
        self.failed += 1
        try:
            await writer.finish(ReplyKind.ERROR, error=error)
        except BrokerError as exc:
            log.warning("job %s: cannot report its error (%s); left pending", job.id, exc)

    async def _attempt(self, job: Job, writer: ReplyWriter) -> ErrorInfo | None:
        """Serve the job; return the error to report, or None when it completed."""
        remaining = job.deadline - time.time()
        if remaining <= 0:
            return ErrorInfo(
                status=504, type="timeout", message="request timed out while queued", code="timeout"
            )
        try:
            async with asyncio.timeout(remaining):
                if job.stream:
                    await self._stream(job, writer)
                else:
                    await self._complete(job, writer)
        except TimeoutError:
            return ErrorInfo(
                status=504,
                type="timeout",
                code="timeout",
                message=f"request timed out: no complete answer from {self.deployment.id} in time",
            )
        except ProviderError as exc:
            log.info("job %s failed on %s: %s", job.id, self.deployment.id, exc.message)
            return exc.info()
        except BrokerError:
            raise
        except Exception:
            log.exception("job %s: unexpected error on %s", job.id, self.deployment.id)
            return ErrorInfo(status=500, type="api_error", message="internal error in the worker")
        return None

    async def _complete(self, job: Job, writer: ReplyWriter) -> None:
        body = backend_body(job, self.deployment)
        response = await self._provider.complete(self.deployment, body)
        usage = response.get("usage")
        source = "backend"
        if not usage:
            text = "".join(
                str((c.get("message") or {}).get("content") or "") for c in response["choices"]
            )
            usage, source = counted_usage(body, max(1, len(text) // 4)), "counted"
        await writer.finish(ReplyKind.DONE, response=response, usage=usage, usage_source=source)

    async def _stream(self, job: Job, writer: ReplyWriter) -> None:
        body = backend_body(job, self.deployment)
        coalescer = Coalescer()
        usage: dict[str, Any] | None = None
        async for chunks in self._provider.stream(self.deployment, body):
            for chunk in chunks:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                choices = chunk.get("choices")
                if choices:
                    coalescer.add(choices)
            if coalescer:
                await writer.delta(coalescer.drain())
        if not coalescer.finish_reasons:
            raise BackendProtocolError(
                f"{self.deployment.id}: the stream ended without a finish_reason"
            )
        source = "backend"
        if not usage:
            usage, source = counted_usage(body, coalescer.content_chunks), "counted"
        await writer.finish(ReplyKind.DONE, usage=usage, usage_source=source)

    async def _poison(self, delivery: Delivery) -> None:
        log.error("dead-lettering entry %s: %s", delivery.entry_id.decode(), delivery.problem)
        self.failed += 1
        try:
            await self._consumer.dead_letter(delivery, delivery.problem or "unreadable")
        except BrokerError as exc:
            log.warning("cannot dead-letter %s: %s", delivery.entry_id.decode(), exc)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
