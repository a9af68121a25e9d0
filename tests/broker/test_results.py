"""Result records: a job's first result stands, and a submitter can settle what nobody took."""

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from inferq.broker.batch.submit import BatchRequest, Submitter, job_id_for
from inferq.broker.connection import Redis, connect
from inferq.broker.jobs.results import progress, records, store
from inferq.broker.keys import Keys
from inferq.broker.messages import ErrorInfo, Job, JobKind, Lane, Reply, ReplyKind
from inferq.broker.ops.usage import read_days
from inferq.config import parse_config

CONFIG = """
model_list:
  - model_name: g
    litellm_params: {{model: openai/up, api_base: "http://127.0.0.1:9/v1"}}
inferq_settings:
  key_prefix: {prefix}
"""


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect(redis_url, blocking_reads=True)
    yield client
    await client.aclose()


def batch_job(submission: str, custom_id: str) -> Job:
    now = time.time()
    return Job(
        id=job_id_for(submission, custom_id),
        model="g",
        group="g",
        body={"messages": []},
        created=now,
        deadline=now + 60,
        lane=Lane.BATCH,
        submission=submission,
        custom_id=custom_id,
        result_ttl=60,
    )


async def test_a_job_run_twice_is_recorded_and_counted_once(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    job = batch_job("s1", "q1")
    usage = {"prompt_tokens": 7, "completion_tokens": 3}
    first = Reply(job=job.id, seq=0, kind=ReplyKind.DONE, response={"id": "first"},
                  group="g", deployment="g.0", usage=usage, cost=0.25)  # fmt: skip
    again = first.model_copy(update={"response": {"id": "second"}})
    for reply in (first, again):  # a stalled worker's job, reclaimed and run again
        pipe = redis.pipeline(transaction=True)
        store(pipe, keys, job, reply, provider="openai")
        await pipe.execute()
    stored = (await records(redis, keys, [job.id]))[job.id]
    assert stored is not None and stored.response == {"id": "first"}
    assert (await progress(redis, keys, "s1")).succeeded == 1
    assert await redis.xlen(keys.submission_results("s1")) == 1
    # Its usage is in the day's totals, once, under every dimension /usage reports.
    day = time.strftime("%Y-%m-%d", time.gmtime())
    totals = (await read_days(redis, keys, [day]))[day]
    expected = {"requests": 1.0, "errors": 0.0, "prompt_tokens": 7.0,
                "completion_tokens": 3.0, "cost": 0.25}  # fmt: skip
    assert totals["group"]["g"] == expected
    assert totals["deployment"]["g.0"] == expected
    assert totals["provider"]["openai"] == expected
    assert totals["key"]["batch"] == expected


async def test_settle_ends_a_submission_no_worker_will_ever_take(redis: Redis, prefix: str) -> None:
    config = parse_config(CONFIG.format(prefix=prefix))
    submitter = Submitter(redis, Keys(prefix), config)
    requests = [
        BatchRequest(f"q{i}", JobKind.CHAT, {"model": "g", "messages": [{"role": "user",
                                                                        "content": "x"}]})
        for i in range(5)
    ]  # fmt: skip
    run = submitter.run("s2", requests, window=5)
    outcomes = []

    async def collect() -> None:
        async for outcome in run:
            outcomes.append(outcome)

    task = asyncio.create_task(collect())
    await asyncio.sleep(0.5)  # all five queued; no worker serves group g
    assert not outcomes
    await submitter.cancel("s2")
    settled = await submitter.settle("s2", code="batch_cancelled", message="nobody took it")
    await asyncio.wait_for(task, 10)
    assert settled == 5
    assert sorted(o.custom_id or "" for o in outcomes) == [f"q{i}" for i in range(5)]
    assert all(o.error and o.error.code == "batch_cancelled" for o in outcomes)
    # Settling again changes nothing: each request has its one result.
    assert await submitter.settle("s2", code="batch_cancelled", message="again") == 0
    assert (await progress(redis, Keys(prefix), "s2")).failed == 5
    assert isinstance(outcomes[0].error, ErrorInfo)
