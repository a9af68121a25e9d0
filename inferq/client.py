"""`inferq.connect`: a batch script's handle on the fabric, without HTTP.

It owns one Redis connection and a `Submitter` (the same client `inferq submit` and the Batch
API use), and shows the submitter's methods under the names the README documents.
"""

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

from inferq.broker.batch.batchfile import parse_input
from inferq.broker.batch.submit import BatchRequest, Submitter
from inferq.broker.connection import Redis
from inferq.broker.connection import connect as redis_connect
from inferq.broker.jobs.results import Outcome, Progress
from inferq.broker.keys import Keys
from inferq.broker.tenants import vkeys
from inferq.broker.tenants.vkeys import KeyRecord
from inferq.config import GatewayConfig, load_config, runtime_env


class Client:
    """Submit batch requests to the fabric's batch lane and follow their results.

    Results are durable: a script that stops (or crashes) and runs the same submission again
    recomputes nothing that finished and waits for what is still running.
    """

    def __init__(self, config: GatewayConfig, redis: Redis, tenant: KeyRecord | None = None):
        self.config = config
        self._redis = redis
        self._submitter = Submitter(redis, Keys(config.fabric.key_prefix), config, tenant)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the Redis connection (queued work carries on in the fabric)."""
        await self._redis.aclose()

    def submit(
        self,
        submission_id: str,
        requests: Iterable[BatchRequest] | AsyncIterable[BatchRequest],
        *,
        window: int = 256,
        stop: asyncio.Event | None = None,
    ) -> AsyncIterator[Outcome]:
        """Queue `requests` under `submission_id` (at most `window` in flight) and yield each
        one's result as it finishes; invalid requests and duplicate custom_ids come back as
        error results. Setting `stop` queues no more and returns once finished results are
        yielded; the rest carry on, and submitting again collects them."""
        return self._submitter.run(submission_id, requests, window=window, stop=stop)

    def results(
        self, submission_id: str, since: str = "0-0", *, follow: bool = False
    ) -> AsyncIterator[tuple[str, Outcome]]:
        """The submission's results in the order they finished, after cursor `since`, each with
        its cursor; with `follow`, wait until every request has its result."""
        return self._submitter.results(submission_id, since, follow=follow)

    async def result(self, submission_id: str, custom_id: str) -> Outcome | None:
        """One request's result, or None while it has none."""
        return await self._submitter.result(submission_id, custom_id)

    async def progress(self, submission_id: str) -> Progress:
        """How many requests were submitted, succeeded and failed; cancelled or closed."""
        return await self._submitter.progress(submission_id)

    async def cancel(self, submission_id: str) -> None:
        """Cancel a submission: its queued requests are skipped (each gets a `batch_cancelled`
        error result); requests already running finish."""
        await self._submitter.cancel(submission_id)


@asynccontextmanager
async def connect(
    config: GatewayConfig | str | Path | None = None,
    redis_url: str | None = None,
    *,
    key: str | None = None,
) -> AsyncIterator[Client]:
    """A `Client` for `config` (a loaded config, or a file path; by default `$INFERQ_CONFIG`
    or the shipped one) on the Redis at `redis_url` (by default `$REDIS_URL`, else
    `redis://127.0.0.1:6379/0`), closed on exit. With `key` (a virtual key), the work runs
    under that key: its models, its usage and its budget (ValueError for an invalid key)."""
    env = runtime_env(
        None if isinstance(config, GatewayConfig) or config is None else str(config), redis_url
    )
    loaded = config if isinstance(config, GatewayConfig) else load_config(env.config_path)
    redis = redis_connect(env.redis_url)
    try:
        tenant = None
        if key is not None:
            tenant = await vkeys.usable(redis, Keys(loaded.fabric.key_prefix), key)
    except BaseException:
        await redis.aclose()
        raise
    client = Client(loaded, redis, tenant)
    try:
        yield client
    finally:
        await client.close()


def read_requests(path: str | Path) -> list[BatchRequest]:
    """The requests of an OpenAI batch input file (JSONL: `custom_id`, `method`, `url`,
    `body`); raises ValueError naming the first line that is not a request."""
    requests: list[BatchRequest] = []
    for line in parse_input(Path(path).read_bytes()):
        if line.request is None:
            raise ValueError(f"{path}, line {line.number}: {line.problem}")
        requests.append(line.request)
    return requests
