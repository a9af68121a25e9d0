"""The fair share's bookkeeping in one API process: caps by weight and by spread across
processes, and waiters let in when a key's share grows back."""

import asyncio

import pytest

from inferq.api.errors import GatewayError
from inferq.api.tenants.fairshare import FairShare, Ticket
from inferq.broker.tenants.shares import fair_cap, spread


def test_the_cap_grows_with_weight_and_divides_between_processes() -> None:
    assert fair_cap(4) == 8  # the slots plus as many queued
    assert fair_cap(4, weight=3) == 24
    assert fair_cap(4, spread=2) == 4
    assert fair_cap(1, spread=5) == 1  # never nothing
    views = {
        "api-1": {"g": {"k": [3, 0]}},
        "api-2": {"g": {"k": [1, 2], "idle": [0, 0]}},
        "batch:sub": {"g": {"k": [5, 0]}},  # the batch lane is not an API process
    }
    assert spread(views, "api-1") == {("g", "k"): 2}


async def _enter(fair: FairShare, key: str = "k") -> Ticket:
    return await fair.enter("g", key, slots=1, weight=1, wait_s=5, limit=100)


def test_a_key_spread_over_two_processes_gets_half_here_until_it_is_only_here() -> None:
    async def run() -> None:
        fair = FairShare()
        fair.set_spread({("g", "k"): 2})
        first = await _enter(fair)  # cap 2 (1 slot + 1), halved: 1
        second = asyncio.create_task(_enter(fair))
        await asyncio.sleep(0.05)
        assert not second.done()
        assert fair.snapshot() == {"g": {"k": [1, 1]}}
        fair.set_spread({})  # the other process has no more of its work
        await asyncio.wait_for(second, 1)
        assert fair.snapshot() == {"g": {"k": [2, 0]}}
        fair.leave(first)
        fair.leave(second.result())
        assert fair.snapshot() == {}

    asyncio.run(run())


def test_requests_waiting_for_a_share_count_against_the_queue_limit() -> None:
    async def run() -> None:
        fair = FairShare()
        held = [await _enter(fair) for _ in range(2)]
        waiting = asyncio.create_task(_enter(fair))
        await asyncio.sleep(0.01)
        with pytest.raises(GatewayError) as full:
            await fair.enter("g", "k", slots=1, weight=1, wait_s=5, limit=1)
        assert full.value.status == 429
        for ticket in held:
            fair.leave(ticket)
        fair.leave(await waiting)

    asyncio.run(run())


def test_a_request_that_timed_out_waiting_is_no_longer_shown_waiting() -> None:
    async def run() -> None:
        fair = FairShare()
        held = [await _enter(fair) for _ in range(2)]  # the key's share: 1 slot + 1
        with pytest.raises(GatewayError) as late:
            await fair.enter("g", "k", slots=1, weight=1, wait_s=0.05, limit=100)
        assert late.value.status == 504
        assert fair.snapshot() == {"g": {"k": [2, 0]}}  # what `inferq status` shows
        for ticket in held:
            fair.leave(ticket)
        fresh = await asyncio.wait_for(_enter(fair), 0.5)
        assert fair.snapshot() == {"g": {"k": [1, 0]}}
        fair.leave(fresh)

    asyncio.run(run())
