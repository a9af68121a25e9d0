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
from typing import Any

import orjson

from broker.batches import (
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
from broker.batchfile import KINDS, Line, parse_input, problem_line, result_line
from broker.connection import Redis
from broker.errors import BrokerError
from broker.files import create_file, file_content
from broker.keys import Keys
from broker.submit import Submitter
from config import GatewayConfig

log = logging.getLogger("inferq.batches")

LEASE_SECONDS = 10.0
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
            await asyncio.sleep(self._poll)

    async def _tick(self) -> None:
        for batch_id in await active_batches(self._redis, self._keys):
            task = self._driving.get(batch_id)
            held = await take_lease(self._redis, self._keys, batch_id, self._owner, LEASE_SECONDS)
            if task is not None and not held:
                log.warning("lost the lease of batch %s; another process drives it", batch_id)
                task.cancel()
            elif task is None and held:
                task = asyncio.create_task(self._drive(batch_id), name=f"batch-{batch_id}")
                self._driving[batch_id] = task

    async def _drive(self, batch_id: str) -> None:
        try:
            await drive(self._redis, self._keys, self.config, batch_id)
        except BrokerError as exc:
            log.warning("batch %s paused: %s", batch_id, exc)
        except Exception:
            log.exception("batch %s: unexpected error; it will be retried", batch_id)
        finally:
            self._driving.pop(batch_id, None)
            with suppress(BrokerError):
                await drop_lease(self._redis, self._keys, batch_id, self._owner)


async def drive(redis: Redis, keys: Keys, config: GatewayConfig, batch_id: str) -> None:
    """Take a batch from wherever it stands to a final state."""
    batch = await get_batch(redis, keys, batch_id)
    if batch is None or batch.status in FINAL:
        return
    data = await file_content(redis, keys, batch.input_file_id)
    if data is None:
        await _fail(redis, keys, batch, "invalid_file", "the input file was deleted")
        return
    lines = parse_input(data)
    if not lines:
        await _fail(redis, keys, batch, "empty_file", "the input file has no requests")
        return
    lines = [_check_url(line, batch.endpoint) for line in lines]
    counts = RequestCounts(total=len(lines))
    if batch.status is BatchStatus.VALIDATING:
        await transition(redis, keys, batch_id, BatchStatus.IN_PROGRESS,
                         allowed_from={BatchStatus.VALIDATING},
                         request_counts=counts.model_dump())  # fmt: skip
    submitter = Submitter(redis, keys, config)
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
    """While the requests run: publish counts, and cancel on request or at the deadline."""
    cancelled = False
    while True:
        current = await get_batch(redis, keys, batch.id)
        if current is None:
            return
        expired = current.expires_at is not None and time.time() >= current.expires_at
        if not cancelled and (current.status is BatchStatus.CANCELLING or expired):
            cancelled = True
            await submitter.cancel(batch.id)
            if expired:
                await mark_expiring(redis, keys, batch.id)
                log.warning("batch %s reached its completion window; cancelling the rest", batch.id)
        progress = await submitter.progress(batch.id)
        counts = RequestCounts(
            total=(current.request_counts.total),
            completed=progress.succeeded,
            failed=progress.failed + invalid,
        )
        await update(redis, keys, batch.id, request_counts=counts.model_dump())
        await asyncio.sleep(0.5)


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
    else:
        final = BatchStatus.COMPLETED
        await transition(redis, keys, batch_id, BatchStatus.FINALIZING,
                         allowed_from={BatchStatus.IN_PROGRESS})  # fmt: skip
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
    for name, rows in (("output", output), ("error", errors)):
        if rows:
            content = b"\n".join(rows) + b"\n"
            name_of = f"{batch_id}_{name}.jsonl"
            made = await create_file(
                redis, keys, filename=name_of, purpose="batch_output", content=content
            )
            files[f"{name}_file_id"] = made.id
    counts = RequestCounts(
        total=batch.request_counts.total, completed=completed, failed=failed + len(problems)
    )
    await transition(redis, keys, batch_id, final,
                     allowed_from={BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING,
                                   BatchStatus.CANCELLING},
                     request_counts=counts.model_dump(), **files)  # fmt: skip
    log.info("batch %s %s: %d completed, %d failed", batch_id, final.value, completed, failed)


async def _fail(redis: Redis, keys: Keys, batch: BatchObject, code: str, message: str) -> None:
    errors = {"object": "list", "data": [{"code": code, "message": message, "line": None}]}
    await transition(redis, keys, batch.id, BatchStatus.FAILED, allowed_from=_RUNNING,
                     errors=errors)  # fmt: skip


def _check_url(line: Line, endpoint: str) -> Line:
    """A request whose url is not the batch's endpoint is one of the batch's bad lines."""
    if line.request is None or line.request.kind is KINDS[endpoint]:
        return line
    return Line(line.number, line.custom_id, problem=f"url must be the batch's endpoint {endpoint}")
