"""A bounded property-based run over the HTTP surface (issue 12): inference routes, `/key/*`,
`/v1/files` and `/v1/batches`, with no key, a wrong key, an ordinary key and the master key.
Whatever comes in: no 5xx, no hung request, the worker stays up, every error in OpenAI's format.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.fabric import MASTER_KEY, Fabric, write_config
from tests.support.fake_backend import FakeBackend

ROUTES = [
    ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
    ("POST", "/v1/messages"), ("GET", "/v1/models"), ("POST", "/key/generate"),
    ("GET", "/key/info"), ("POST", "/key/update"), ("POST", "/key/delete"), ("GET", "/key/list"),
    ("POST", "/key/regenerate"), ("GET", "/v1/files"), ("GET", "/v1/files/file-x"),
    ("DELETE", "/v1/files/file-0123456789abcdef01234567"), ("POST", "/v1/batches"),
    ("GET", "/v1/batches"), ("GET", "/v1/batches/batch_0123456789abcdef01234567"),
    ("POST", "/v1/batches/batch_x/cancel"), ("GET", "/usage"),
]  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)  # fmt: skip
model = st.sampled_from(["fake", "fake-llama", "chained", "quiet", "nope", ""]) | st.text(
    max_size=8
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "x"]),
     "content": st.text(max_size=30) | json_values},
)  # fmt: skip
near_valid = st.fixed_dictionaries(
    {"model": model, "messages": st.lists(message, max_size=4)},
    optional={
        "max_tokens": st.integers(-5, 50) | json_values, "stream": st.booleans() | json_values,
        "temperature": st.floats(-1, 3) | json_values, "input": st.text(max_size=20) | json_values,
        "prompt": st.text(max_size=20) | json_values, "models": st.lists(model, max_size=3),
        "keys": st.lists(st.text(max_size=70), max_size=3), "key": st.text(max_size=70),
        "rpm_limit": st.integers(-3, 10) | json_values, "budget_duration": st.text(max_size=5),
        "input_file_id": st.text(max_size=30), "endpoint": st.text(max_size=25),
        "fallbacks": st.lists(model, max_size=3) | json_values, "timeout": st.floats(-1, 5),
    },
)  # fmt: skip
bodies = st.one_of(
    near_valid.map(orjson.dumps), json_values.map(orjson.dumps), st.binary(max_size=60)
)


@pytest.fixture(scope="module")
def fabric(
    fake: FakeBackend, redis_url: str, module_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Fabric, dict[str, str]]]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    config = write_config(tmp / "c.yaml", fake.api_base, module_prefix)
    running = Fabric(config, redis_url, tmp)
    try:
        running.start_worker()
        running.start_api()
        settings_ = {"models": ["fake"], "rpm_limit": 10_000}
        admin = {"Authorization": f"Bearer {MASTER_KEY}"}
        made = httpx.post(running.base_url + "/key/generate", json=settings_, headers=admin)
        keys = {"none": "", "wrong": "sk-" + "w" * 43, "user": made.json()["key"],
                "master": MASTER_KEY}  # fmt: skip
        yield running, keys
    finally:
        running.stop()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(ROUTES),
    who=st.sampled_from(["none", "wrong", "user", "master"]),
    body=bodies,
    query=st.dictionaries(
        st.sampled_from(["key", "limit", "after", "start"]), st.text(max_size=20), max_size=2
    ),
)
def test_nothing_an_outsider_sends_breaks_the_gateway(
    fabric: tuple[Fabric, dict[str, str]],
    route: tuple[str, str],
    who: str,
    body: bytes,
    query: dict[str, str],
) -> None:
    running, keys = fabric
    method, path = route
    headers = {"content-type": "application/json"}
    if keys[who]:
        headers["authorization"] = f"Bearer {keys[who]}"
    resp = httpx.request(
        method, running.base_url + path, content=body if method == "POST" else None,
        params=query, headers=headers, timeout=15,
    )  # fmt: skip
    assert resp.status_code < 500, (resp.status_code, resp.text[:300])
    if resp.status_code >= 400:
        answer: Any = resp.json()
        error = answer["error"]
        if path == "/v1/messages" and answer.get("type") == "error":  # Anthropic's format
            assert set(error) == {"type", "message"}
        else:
            assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]
    assert keys["user"][3:15] not in resp.text and MASTER_KEY not in resp.text
    assert running.procs["worker"].poll() is None
