"""Shared fixtures: a real Redis (the machine's, else an embedded one) and a fake backend.

Tests marked `topologies` run once per Redis topology: the single server, a primary with a
replica behind three sentinels, and a three-primary Redis Cluster (both started once for the
run on loopback ports).
"""

import os
import secrets
from collections.abc import Iterator

import pytest

from inferq.cli.local import EmbeddedRedis, redis_answers
from tests.support.fake_backend import BackendThread, Behaviour, FakeBackend
from tests.support.topology import ClusterSet, SentinelSet, sync_client

_DEFAULT = "redis://127.0.0.1:6379/15"
TOPOLOGIES = ("single", "sentinel", "cluster")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("topologies")
    if marker and "redis_url" in metafunc.fixturenames:
        # `@pytest.mark.topologies("single", "cluster")` runs on those only.
        chosen = marker.args or TOPOLOGIES
        metafunc.parametrize("redis_url", chosen, indirect=True, scope="session")


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A real Redis for the whole run: $INFERQ_TEST_REDIS_URL, the local one (db 15), or
    an embedded Valkey started for the run; for `topologies` tests, also a Sentinel set and
    a cluster."""
    topology = getattr(request, "param", "single")
    if topology == "cluster":
        cluster: ClusterSet = request.getfixturevalue("cluster_set")
        yield cluster.url
        return
    if topology == "sentinel":
        servers = SentinelSet().start()
        try:
            yield servers.url
        finally:
            servers.stop()
        return
    url = os.environ.get("INFERQ_TEST_REDIS_URL", _DEFAULT)
    if redis_answers(url):
        yield url
        return
    server = EmbeddedRedis().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def cluster_set() -> Iterator[ClusterSet]:
    """A three-primary Redis Cluster for the whole run (started on first use)."""
    cluster = ClusterSet().start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _own_prefix(redis_url: str) -> Iterator[str]:
    name = f"t{secrets.token_hex(4)}"
    yield name
    client = sync_client(redis_url)
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
