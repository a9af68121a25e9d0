"""Batch work through a real worker: interactive requests go first and keep a free slot, batch
work still progresses under interactive load, and the submission client bounds what is in
flight, reconnects and cancels."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import pytest

from inferq.broker.batch.submit import BatchRequest, Submitter
from inferq.broker.connection import Redis, connect
from inferq.broker.jobs.queue import enqueue, ensure_group
from inferq.broker.jobs.replies import ReplyDispatcher
from inferq.broker.jobs.results import Outcome
from inferq.broker.keys import Keys
from inferq.broker.messages import Job, JobKind, Reply, ReplyKind
from inferq.config import GatewayConfig, parse_config
from inferq.workers.providers import provider_for
from inferq.workers.transport import BackendHTTP
from inferq.workers.worker import DeploymentWorker
from tests.support.fake_backend import FakeBackend

CONFIG = """
model_list:
  - model_name: g
    litellm_params:
      model: openai/up
      api_base: {api_base}
      max_parallel_requests: {slots}
router_settings:
  model_group_alias:
    alias: g
inferq_settings:
  key_prefix: {prefix}
  batch_min_share: {share}
"""


@dataclass
class Fabric:
    config: GatewayConfig
    redis: Redis
    keys: Keys
    dispatcher: ReplyDispatcher
    submitter: Submitter
    backend: FakeBackend

    async def interactive(self, text: str) -> Reply:
        """Enqueue an interactive chat job and wait for its answer."""
        now = time.time()
        job = Job(
            id=f"i{time.monotonic_ns()}",
            model="g",
            group="g",
            body={"messages": [{"role": "user", "content": text}], "max_tokens": 2},
            reply_to=self.dispatcher.channel,
            created=now,
            deadline=now + 30,
        )
        replies = self.dispatcher.open(job.id)
        await enqueue(self.redis, self.keys, job)
        return await asyncio.wait_for(replies.next(), 20)

    def asked(self) -> list[str]:
        """The user text of every request the backend received, in order."""
        return [r["messages"][-1]["content"] for r in self.backend.requests]


def requests(n: int, prefix: str = "b", model: str = "g") -> list[BatchRequest]:
    return [
        BatchRequest(
            f"{prefix}{i}",
            JobKind.CHAT,
            {
                "model": model,
                "messages": [{"role": "user", "content": f"{prefix}{i}"}],
                "max_tokens": 2,
            },
        )
        for i in range(n)
    ]


Make = Callable[..., AbstractAsyncContextManager[Fabric]]


@pytest.fixture
def fabric(redis_url: str, prefix: str, backend: FakeBackend) -> Make:
    @asynccontextmanager
    async def make(slots: int, share: float = 0.1) -> AsyncIterator[Fabric]:
        text = CONFIG.format(api_base=backend.api_base, prefix=prefix, slots=slots, share=share)
        config = parse_config(text, env={})
        keys = Keys(prefix)
        redis = connect(redis_url, blocking_reads=True)
        listener = connect(redis_url, blocking_reads=True)
        dispatcher = ReplyDispatcher(listener, keys.reply("test"))
        await dispatcher.start()
        await ensure_group(redis, keys, "g")
        stop = asyncio.Event()
        async with BackendHTTP() as http:
            dep = config.groups["g"][0]
            worker = DeploymentWorker(dep, config, redis, provider_for(dep, http), block_ms=100)
            task = asyncio.create_task(worker.run(stop))
            try:
                yield Fabric(
                    config, redis, keys, dispatcher, Submitter(redis, keys, config), backend
                )
            finally:
                stop.set()
                await task
        await dispatcher.stop()
        await listener.aclose()
        await redis.aclose()

    return make


async def collect(run: AsyncIterator[Outcome]) -> list[Outcome]:
    return [outcome async for outcome in run]


async def wait_until(predicate: Callable[[], bool], within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_batch_backlog_leaves_a_slot_for_interactive(
    fabric: Make, backend: FakeBackend
) -> None:
    backend.behaviour.first_token_delay = 0.3
    async with fabric(slots=4) as f:
        run = asyncio.create_task(collect(f.submitter.run("s", requests(12))))
        await wait_until(lambda: backend.active == 3)
        await asyncio.sleep(0.2)
        assert backend.active == 3  # 75% of 4 slots; one stays free
        started = time.monotonic()
        reply = await f.interactive("now")
        assert reply.kind is ReplyKind.DONE
        assert time.monotonic() - started < 0.6  # one backend call, no wait behind the batch
        assert reply.queue_ms is not None and reply.queue_ms < 150
        outcomes = await asyncio.wait_for(run, 20)
    assert sorted(o.custom_id or "" for o in outcomes) == sorted(f"b{i}" for i in range(12))
    assert all(o.ok for o in outcomes)
    assert backend.max_active == 4


async def test_one_slot_serves_interactive_before_the_batch_backlog(
    fabric: Make, backend: FakeBackend
) -> None:
    backend.behaviour.first_token_delay = 0.15
    async with fabric(slots=1) as f:
        run = asyncio.create_task(collect(f.submitter.run("s", requests(6))))
        await wait_until(lambda: backend.active == 1)
        reply = await f.interactive("now")
        assert reply.kind is ReplyKind.DONE
        outcomes = await asyncio.wait_for(run, 20)
    assert len(outcomes) == 6
    # A one-slot backend finishes the batch job it holds, then takes the interactive one.
    assert f.asked()[1] == "now"


async def test_batch_still_progresses_under_continuous_interactive_load(
    fabric: Make, backend: FakeBackend
) -> None:
    backend.behaviour.first_token_delay = 0.03
    async with fabric(slots=2, share=0.2) as f:
        interactive = [asyncio.create_task(f.interactive(f"i{n}")) for n in range(60)]
        await wait_until(lambda: len(backend.requests) >= 4)
        outcomes = await asyncio.wait_for(collect(f.submitter.run("s", requests(4))), 20)
        answered = sum(t.done() for t in interactive)
        await asyncio.wait_for(asyncio.gather(*interactive), 20)
    assert all(o.ok for o in outcomes)
    # The batch finished while interactive requests were still waiting: it was not starved.
    assert answered < 50, answered
    batch_at = [i for i, text in enumerate(f.asked()) if text.startswith("b")]
    assert len(batch_at) == 4


async def test_window_bounds_the_jobs_in_flight(fabric: Make, backend: FakeBackend) -> None:
    backend.behaviour.first_token_delay = 0.05
    async with fabric(slots=8) as f:
        run = asyncio.create_task(collect(f.submitter.run("s", requests(15), window=2)))
        await wait_until(lambda: len(backend.requests) > 0)
        # Another client follows the same submission until it is complete.
        followed = [o async for _c, o in f.submitter.results("s", follow=True)]
        outcomes = await run
        progress = await f.submitter.progress("s")
    assert sorted(o.custom_id or "" for o in followed) == sorted(f"b{i}" for i in range(15))
    assert len(outcomes) == 15 and len({o.custom_id for o in outcomes}) == 15
    assert backend.max_active == 2  # the window binds before the 6 batch slots do
    assert (progress.submitted, progress.succeeded, progress.done) == (15, 15, True)


async def test_reconnect_gets_what_finished_while_away(fabric: Make, backend: FakeBackend) -> None:
    backend.behaviour.first_token_delay = 0.1
    async with fabric(slots=4) as f:
        stop = asyncio.Event()
        first: list[Outcome] = []
        async for outcome in f.submitter.run("s", requests(8), window=8, stop=stop):
            first.append(outcome)
            stop.set()  # the client goes away after its first result
        assert len(first) < 8
        await wait_until(lambda: len(backend.requests) == 8)
        await asyncio.sleep(0.3)  # the rest finish while nobody listens
        since = [item async for item in f.submitter.results("s")]
        assert sorted(o.custom_id or "" for _c, o in since) == [f"b{i}" for i in range(8)]
        # Reading on from a cursor gives only what came after it.
        cursor = since[2][0]
        later = [o.custom_id async for _c, o in f.submitter.results("s", since=cursor)]
        assert later == [o.custom_id for _c, o in since[3:]]
        # Running the same submission again recomputes nothing.
        again = await collect(f.submitter.run("s", requests(8)))
    assert sorted(o.custom_id or "" for o in again) == [f"b{i}" for i in range(8)]
    assert len(backend.requests) == 8


async def test_cancel_skips_queued_jobs_with_an_error_result(
    fabric: Make, backend: FakeBackend
) -> None:
    backend.behaviour.first_token_delay = 0.3
    async with fabric(slots=1) as f:
        run = asyncio.create_task(collect(f.submitter.run("s", requests(6))))
        await wait_until(lambda: backend.active == 1)
        await f.submitter.cancel("s")
        outcomes = await asyncio.wait_for(run, 10)
        progress = await f.submitter.progress("s")
    assert len(outcomes) == 6
    cancelled = [o for o in outcomes if not o.ok]
    assert len(cancelled) >= 4
    assert {o.error.code for o in cancelled if o.error} == {"batch_cancelled"}
    assert len(backend.requests) <= 2
    assert progress.cancelled and progress.finished == 6


async def test_bad_requests_become_error_results_not_exceptions(
    fabric: Make,
) -> None:
    bad = [
        BatchRequest("nomodel", JobKind.CHAT, {"messages": [{"role": "user", "content": "x"}]}),
        BatchRequest("ghost", JobKind.CHAT, {"model": "ghost", "messages": [{"role": "user"}]}),
        BatchRequest("norole", JobKind.CHAT, {"model": "g", "messages": [{"content": "x"}]}),
        *requests(1, model="alias"),
        *requests(1, model="alias"),  # the same custom_id twice
    ]
    async with fabric(slots=2) as f:
        answered = await collect(f.submitter.run("s", bad))
        stored = [o.custom_id async for _c, o in f.submitter.results("s")]
    assert len(answered) == 5
    twice = [o for o in answered if o.custom_id == "b0"]
    assert sorted(o.ok for o in twice) == [False, True]
    assert [o.error.code for o in twice if o.error] == ["duplicate_custom_id"]
    outcomes = {o.custom_id: o for o in answered if o.custom_id != "b0"}
    assert outcomes["nomodel"].status == 400 and outcomes["nomodel"].error is not None
    assert outcomes["nomodel"].error.param == "model"
    ghost = outcomes["ghost"].error
    assert ghost is not None and ghost.code == "model_not_found" and "Available" in ghost.message
    assert outcomes["norole"].status == 400
    # The alias routed to its group, as through the API; the duplicate was answered but not
    # recorded: the first b0's result stands.
    assert sorted(stored, key=str) == ["b0", "ghost", "nomodel", "norole"]


async def test_failed_attempts_are_retried_and_the_result_says_so(
    fabric: Make, backend: FakeBackend
) -> None:
    backend.behaviour.status, backend.behaviour.fail_first = 500, 2
    async with fabric(slots=2) as f:
        [outcome] = await collect(f.submitter.run("s", requests(1)))
        queue = await f.redis.xlen(f.keys.jobs("g"))
    assert outcome.ok and outcome.reply.attempts == 3
    assert outcome.response is not None and outcome.response["choices"]
    assert queue == 0
