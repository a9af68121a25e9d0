"""Shared fixtures: a real Redis (the machine's, else an embedded one) and a fake backend."""

import os
import secrets
from collections.abc import Iterator

import pytest
import redis

from inferq.cli.local import EmbeddedRedis, redis_answers
from tests.support.fake_backend import BackendThread, Behaviour, FakeBackend

_DEFAULT = "redis://127.0.0.1:6379/15"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis for the whole run: $INFERQ_TEST_REDIS_URL, the local one (db 15), or
    an embedded Valkey started for the run."""
    url = os.environ.get("INFERQ_TEST_REDIS_URL", _DEFAULT)
    if redis_answers(url):
        yield url
        return
    server = EmbeddedRedis().start()
    try:
        yield server.url
    finally:
        server.stop()


def _own_prefix(redis_url: str) -> Iterator[str]:
    name = f"t{secrets.token_hex(4)}"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    yield from _own_prefix(redis_url)


@pytest.fixture(scope="module")
def module_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this module's own (for fixtures shared by its tests)."""
    yield from _own_prefix(redis_url)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeBackend]:
    """A fake OpenAI-compatible backend shared by a module's tests (they reset it)."""
    thread = BackendThread()
    yield thread.start()
    thread.stop()


@pytest.fixture
def backend() -> Iterator[FakeBackend]:
    """A fake OpenAI-compatible backend on loopback, reset for each test."""
    thread = BackendThread()
    fake = thread.start()
    fake.behaviour = Behaviour()
    try:
        yield fake
    finally:
        thread.stop()
