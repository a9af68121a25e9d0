"""Drives `/v1/batches` batches through their lifecycle, from whichever API process holds the
batch's lease.

validating: the input file is read and checked line by line (a bad line becomes a line of the
error file, not a failed batch). in_progress: the requests go to the batch lane through the
direct submission client, at most `batch_api_window` at a time; request counts follow the
results. finalizing: the output and error files are written from the durable result records.
A cancel or the end of the completion window cancels what has not run; what ran is kept.

Every step can be repeated: if the process driving a batch stops, its lease expires and another
API process carries on where it stood (the submission skips requests that already have a
result, and waits for those still running).
"""

import asyncio
import logging
import time
from contextlib import suppress
from dataclasses import replace
from typing import Any

import orjson

from inferq.broker.batch.batches import (
    FINAL,
    BatchObject,
    BatchStatus,
    RequestCounts,
    active_batches,
    drop_lease,
    get_batch,
    is_expiring,
    mark_expiring,
    take_lease,
    transition,
    update,
)
from inferq.broker.batch.batchfile import KINDS, Line, parse_input, problem_line, result_line
from inferq.broker.batch.files import create_file, file_content
from inferq.broker.batch.submit import Submitter
from inferq.broker.connection import Redis
from inferq.broker.errors import BrokerError
from inferq.broker.keys import Keys
from inferq.broker.tenants import vkeys
from inferq.broker.tenants.owners import owners_of
from inferq.config import GatewayConfig

log = logging.getLogger("inferq.batches")

LEASE_SECONDS = 10.0
MAX_DRIVEN = 4  # batches one API process drives at once; the others wait for a free hand
MAX_FAILURES = 5  # unexpected errors in a row before a batch is failed instead of retried
# After a cancel or the end of the window, requests nobody took get their error result from the
# driver itself: without a live worker for their group, no worker would ever write it.
SETTLE_AFTER = 30.0
_RUNNING = {BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING}


class BatchDriver:
    """Takes the lease of every active batch nobody drives, and drives it."""

    def __init__(
        self, redis: Redis, keys: Keys, config: GatewayConfig, owner: str, poll: float = 1.0
    ) -> None:
        self.config = config  # follows reloads (the window, the routing of new requests)
        self._redis = redis
        self._keys = keys
        self._owner = owner
        self._poll = poll
        self._driving: dict[str, asyncio.Task[None]] = {}
        self._failures: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Look for batches to drive in the background."""
        self._task = asyncio.create_task(self._run(), name="batch-driver")

    async def stop(self) -> None:
        """Stop driving; leases are released so another process carries on at once."""
        if self._task:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._driving.values()):
            task.cancel()
        for batch_id, task in list(self._driving.items()):
            with suppress(asyncio.CancelledError):
                await task
            with suppress(BrokerError):
                await drop_lease(self._redis, self._keys, batch_id, self._owner)

    async def _run(self) -> None:
        while True:
            try:
                await self._tick()
            except BrokerError as exc:
                log.warning("batch driver waiting for Redis: %s", exc)
            except Exception:  # the loop renews leases: it must outlive any bug in one tick
                log.exception("batch driver tick failed")
            await asyncio.sleep(self._poll)

    async def _tick(self) -> None:
        for batch_id in await active_batches(self._redis, self._keys):
            task = self._driving.get(batch_id)
            held = await take_lease(self._redis, self._keys, batch_id, self._owner, LEASE_SECONDS)
            if task is not None and not held:
                log.warning("lost the lease of batch %s; another process drives it", batch_id)
                task.cancel()
            elif task is None and held and len(self._driving) >= MAX_DRIVEN:
                await drop_lease(self._redis, self._keys, batch_id, self._owner)
            elif task is None and held:
                task = asyncio.create_task(self._drive(batch_id), name=f"batch-{batch_id}")
                self._driving[batch_id] = task

    async def _drive(self, batch_id: str) -> None:
        try:
            await drive(self._redis, self._keys, self.config, batch_id)
            self._failures.pop(batch_id, None)
        except BrokerError as exc:
            log.warning("batch %s paused: %s", batch_id, exc)
        except Exception as exc:
            failures = self._failures[batch_id] = self._failures.get(batch_id, 0) + 1
            log.exception("batch %s: unexpected error (%d in a row)", batch_id, failures)
            if failures >= MAX_FAILURES:
                with suppress(BrokerError):
                    why = f"the batch failed {failures} times: {type(exc).__name__}"
                    await fail(self._redis, self._keys, batch_id, "internal_error", why)
        finally:
            # Release before forgetting: a tick in between would otherwise renew the lease for
            # a task that is gone, and start no other.
            with suppress(BrokerError):
                await drop_lease(self._redis, self._keys, batch_id, self._owner)
            self._driving.pop(batch_id, None)


async def drive(redis: Redis, keys: Keys, config: GatewayConfig, batch_id: str) -> None:
    """Take a batch from wherever it stands to a final state."""
    batch = await get_batch(redis, keys, batch_id)
    if batch is None or batch.status in FINAL:
        return
    data = await file_content(redis, keys, batch.input_file_id)
    if data is None:
        await fail(redis, keys, batch_id, "invalid_file", "the input file was deleted")
        return
    lines = await asyncio.to_thread(_lines, data, batch.endpoint)  # up to 200 MB: off the loop
    if not lines:
        await fail(redis, keys, batch_id, "empty_file", "the input file has no requests")
        return
    if batch.request_counts.total != len(lines):  # whatever state it starts from
        batch.request_counts.total = len(lines)
        await update(redis, keys, batch_id, request_counts=batch.request_counts.model_dump())
    if batch.status is BatchStatus.VALIDATING:
        await transition(redis, keys, batch_id, BatchStatus.IN_PROGRESS,
                         allowed_from={BatchStatus.VALIDATING})  # fmt: skip
    tenant = None
    owner = (await owners_of(redis, keys, [batch_id]))[0]
    if owner is not None:  # a virtual key's batch runs under that key, while it exists
        tenant = await vkeys.load(redis, keys, owner)
        gone = tenant is None or tenant.expired(time.time())
        if gone and batch.status is not BatchStatus.FINALIZING:
            await fail(redis, keys, batch_id, "invalid_key", "the key of this batch was revoked")
            return
    submitter = Submitter(redis, keys, _keeping_results(config, batch), tenant)
    problems = [line for line in lines if line.request is None]
    if batch.status is not BatchStatus.FINALIZING:
        requests = [line.request for line in lines if line.request is not None]
        if batch.status is BatchStatus.CANCELLING:  # cancelled before it ever ran
            await submitter.cancel(batch.id)
        watch = asyncio.create_task(_watch(redis, keys, submitter, batch, len(problems)))
        try:
            async for _outcome in submitter.run(
                batch.id, requests, window=config.fabric.batch_api_window
            ):
                pass  # results are durable records; the files are written from them below
        finally:
            watch.cancel()
            with suppress(asyncio.CancelledError):
                await watch
    await _finalize(redis, keys, submitter, batch_id, problems)


async def _watch(
    redis: Redis, keys: Keys, submitter: Submitter, batch: BatchObject, invalid: int
) -> None:
    """While the requests run: publish counts, cancel on request or at the deadline, and
    settle what nobody took a while after that."""
    cancelled_at: float | None = None
    while True:
        try:
            cancelled_at = await _look(
                redis, keys, submitter, batch, invalid=invalid, cancelled_at=cancelled_at
            )
        except BrokerError as exc:  # Redis is back within seconds, usually: keep watching
            log.warning("batch %s: cannot update its state now: %s", batch.id, exc)
        await asyncio.sleep(0.5)


async def _look(
    redis: Redis,
    keys: Keys,
    submitter: Submitter,
    batch: BatchObject,
    *,
    invalid: int,
    cancelled_at: float | None,
) -> float | None:
    current = await get_batch(redis, keys, batch.id)
    if current is None:
        return cancelled_at
    expired = current.expires_at is not None and time.time() >= current.expires_at
    if cancelled_at is None and (current.status is BatchStatus.CANCELLING or expired):
        cancelled_at = time.monotonic()
        await submitter.cancel(batch.id)
        if expired:
            await mark_expiring(redis, keys, batch.id)
            log.warning("batch %s reached its completion window; cancelling the rest", batch.id)
    elif cancelled_at is not None and time.monotonic() - cancelled_at > SETTLE_AFTER:
        settled = await submitter.settle(
            batch.id, code="batch_cancelled", message="cancelled before any worker took it"
        )
        if settled:
            log.warning("batch %s: %d requests no worker took were cancelled", batch.id, settled)
    progress = await submitter.progress(batch.id)
    counts = RequestCounts(
        total=current.request_counts.total,
        completed=progress.succeeded,
        failed=progress.failed + invalid,
    )
    await update(redis, keys, batch.id, request_counts=counts.model_dump())
    return cancelled_at


async def _finalize(
    redis: Redis, keys: Keys, submitter: Submitter, batch_id: str, problems: list[Line]
) -> None:
    batch = await get_batch(redis, keys, batch_id)
    if batch is None or batch.status in FINAL:
        return
    if batch.status is BatchStatus.CANCELLING:
        final = BatchStatus.CANCELLED
    elif await is_expiring(redis, keys, batch_id):
        final = BatchStatus.EXPIRED
    elif batch.status is BatchStatus.FINALIZING or await transition(
        redis, keys, batch_id, BatchStatus.FINALIZING, allowed_from={BatchStatus.IN_PROGRESS}
    ):
        final = BatchStatus.COMPLETED
    else:  # cancelled just now: drive again, and end it as cancelled
        return
    output: list[bytes] = []
    errors: list[bytes] = [orjson.dumps(problem_line(line)) for line in problems]
    completed = failed = 0
    async for _cursor, outcome in submitter.results(batch_id):
        line: dict[str, Any] = result_line(outcome)
        if outcome.ok:
            completed += 1
            output.append(orjson.dumps(line))
        else:
            failed += 1
            errors.append(orjson.dumps(line))
    files: dict[str, Any] = {"output_file_id": None, "error_file_id": None}
    hex_id = batch_id.removeprefix("batch_")
    for name, rows, suffix in (("output", output, "output"), ("error", errors, "errors")):
        if rows:
            content = b"\n".join(rows) + b"\n"
            made = await create_file(redis, keys, filename=f"{batch_id}_{name}.jsonl",
                                     purpose="batch_output", content=content,
                                     file_id=f"file-{hex_id}-{suffix}")  # fmt: skip
            files[f"{name}_file_id"] = made.id
    counts = RequestCounts(
        total=batch.request_counts.total, completed=completed, failed=failed + len(problems)
    )
    await transition(redis, keys, batch_id, final,
                     allowed_from={BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING,
                                   BatchStatus.CANCELLING},
                     request_counts=counts.model_dump(), **files)  # fmt: skip
    log.info("batch %s %s: %d completed, %d failed", batch_id, final.value, completed, failed)


async def fail(redis: Redis, keys: Keys, batch_id: str, code: str, message: str) -> None:
    """End a batch that cannot run (its input is gone, empty, or it keeps breaking)."""
    errors = {"object": "list", "data": [{"code": code, "message": message, "line": None}]}
    await transition(redis, keys, batch_id, BatchStatus.FAILED, allowed_from=_RUNNING,
                     errors=errors)  # fmt: skip


def _lines(data: bytes, endpoint: str) -> list[Line]:
    return [_check_url(line, endpoint) for line in parse_input(data)]


def _keeping_results(config: GatewayConfig, batch: BatchObject) -> GatewayConfig:
    """The config with result records kept until the batch can be finalized: past its
    completion window, plus an hour."""
    window = (batch.expires_at or batch.created_at) - batch.created_at
    ttl = max(config.fabric.result_ttl, window + 3600.0)
    return replace(config, fabric=replace(config.fabric, result_ttl=ttl))


def _check_url(line: Line, endpoint: str) -> Line:
    """A request whose url is not the batch's endpoint is one of the batch's bad lines."""
    if line.request is None or line.request.kind is KINDS[endpoint]:
        return line
    return Line(line.number, line.custom_id, problem=f"url must be the batch's endpoint {endpoint}")
