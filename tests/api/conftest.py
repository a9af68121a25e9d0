"""Fixtures for the modules that put an OpenAI-compatible and an Anthropic fake backend behind one
fabric (providers, the Responses API, the spec routes)."""

from collections.abc import Iterator

import pytest

from tests.support.fake_backend import BackendThread, FakeBackend


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeBackend, FakeBackend]]:
    """Two fake backends for a module: OpenAI-compatible (`local`) and Anthropic (`claude`)."""
    threads = [BackendThread(), BackendThread()]
    local, claude = (t.start() for t in threads)
    yield local, claude
    for t in threads:
        t.stop()
