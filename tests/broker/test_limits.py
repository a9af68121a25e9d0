"""Per-deployment limits in Redis: cooldown after repeated failures, rpm/tpm windows."""

from collections.abc import AsyncIterator

import pytest

from inferq.broker.connection import Redis, connect
from inferq.broker.keys import Keys
from inferq.broker.ops.limits import DeploymentLimits


@pytest.fixture
async def limits(redis_url: str, prefix: str) -> AsyncIterator[tuple[DeploymentLimits, Redis]]:
    redis = connect(redis_url)
    yield DeploymentLimits(redis, Keys(prefix), "g", "g.0"), redis
    await redis.aclose()


async def test_cooldown_starts_past_allowed_fails(limits: tuple[DeploymentLimits, Redis]) -> None:
    lim, _ = limits
    assert not await lim.record_failure(allowed=2, cooldown=5)
    assert not await lim.record_failure(allowed=2, cooldown=5)
    assert await lim.cooldown_left() == 0
    assert await lim.record_failure(allowed=2, cooldown=5)  # the third in a minute
    assert 4 < await lim.cooldown_left() <= 5


async def test_rpm_grants_at_most_the_limit_per_minute(
    limits: tuple[DeploymentLimits, Redis],
) -> None:
    lim, _ = limits
    granted, wait = await lim.grant(5, rpm=3, tpm=None)
    assert (granted, wait) == (3, 0.0)
    granted, wait = await lim.grant(1, rpm=3, tpm=None)
    assert granted == 0 and 0 < wait <= 60  # until the next one-minute window
    await lim.give_back(2)  # two granted slots found no job
    assert (await lim.grant(5, rpm=3, tpm=None))[0] == 2


async def test_tpm_stops_grants_once_tokens_are_spent(
    limits: tuple[DeploymentLimits, Redis],
) -> None:
    lim, _ = limits
    assert (await lim.grant(1, rpm=None, tpm=100))[0] == 1
    await lim.add_tokens(100)
    granted, wait = await lim.grant(1, rpm=None, tpm=100)
    assert granted == 0 and wait > 0
