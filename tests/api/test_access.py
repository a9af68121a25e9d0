"""Access lines and request ids, read from the logs of a running fabric."""

import json
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from inferq.api.middleware.access import FIELDS
from tests.support.fabric import CONFIG, MASTER_KEY, Fabric, running, write_config
from tests.support.fake_backend import Behaviour, FakeBackend

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
MESSAGES = [{"role": "user", "content": "say something"}]
_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


@pytest.fixture(scope="module")
def fabric(
    module_prefix: str, redis_url: str, fake: FakeBackend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fabric]:
    tmp = tmp_path_factory.mktemp("access")
    with running(CONFIG, redis_url, tmp, api_base=fake.api_base, prefix=module_prefix) as fab:
        yield fab


@pytest.fixture(autouse=True)
def _reset(fake: FakeBackend) -> None:
    fake.behaviour = Behaviour()


def new_id() -> str:
    return f"client-{secrets.token_hex(6)}"


def post(fabric: Fabric, rid: str | None = None, **body: Any) -> httpx.Response:
    headers = {**AUTH, **({"x-request-id": rid} if rid else {})}
    payload = {"model": "fake", "messages": MESSAGES, "max_tokens": 4, **body}
    return httpx.post(
        fabric.base_url + "/v1/chat/completions", json=payload, headers=headers, timeout=30
    )


def access_lines(log: str) -> list[dict[str, Any]]:
    """The text access lines of a log, as dicts (`key=value`, quoted values JSON-decoded)."""
    lines = []
    for line in log.splitlines():
        _, sep, rest = line.partition(" inferq.access: request ")
        if sep:
            pairs = _PAIR.findall(rest)
            lines.append({k: json.loads(v) if v.startswith('"') else v for k, v in pairs})
    return lines


def lines_for(fabric: Fabric, rid: str, count: int = 1) -> list[dict[str, Any]]:
    """The access lines of request `rid`, once `count` of them are written (a second later,
    any more that would have come have come too)."""
    deadline = time.monotonic() + 5
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = [a for a in access_lines(fabric.log("api")) if a.get("request_id") == rid]
        if len(found) >= count:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    return [a for a in access_lines(fabric.log("api")) if a.get("request_id") == rid]


def test_one_line_per_request_with_route_status_and_tokens(fabric: Fabric) -> None:
    rid = new_id()
    resp = post(fabric, rid)
    assert resp.status_code == 200
    assert resp.headers["x-request-id"] == rid
    usage = resp.json()["usage"]
    [line] = lines_for(fabric, rid)
    assert line["method"] == "POST" and line["path"] == "/v1/chat/completions"
    assert line["model"] == "fake" and line["group"] == "fake" and line["deployment"] == "fake.0"
    assert line["status"] == "200" and line["outcome"] == "ok"
    assert int(line["prompt_tokens"]) == usage["prompt_tokens"]
    assert int(line["completion_tokens"]) == usage["completion_tokens"] == 4
    assert float(line["latency_ms"]) > 0 and "ttft_ms" not in line


def test_a_stream_has_its_line_when_it_ends_with_time_to_first_token(fabric: Fabric) -> None:
    rid = new_id()
    body = {"model": "fake", "messages": MESSAGES, "max_tokens": 5, "stream": True}
    headers = {**AUTH, "x-request-id": rid}
    url = fabric.base_url + "/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as resp:
        assert resp.headers["x-request-id"] == rid
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    [line] = lines_for(fabric, rid)
    assert line["status"] == "200" and line["outcome"] == "ok"
    assert line["completion_tokens"] == "5"
    assert 0 < float(line["ttft_ms"]) <= float(line["latency_ms"])


def test_a_stream_whose_client_leaves_is_logged_as_disconnected(
    fabric: Fabric, fake: FakeBackend
) -> None:
    fake.behaviour.token_delay = 0.1
    rid = new_id()
    payload = orjson.dumps(
        {"model": "fake", "messages": MESSAGES, "max_tokens": 50, "stream": True}
    )
    sock = socket.create_connection(("127.0.0.1", fabric.port))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + f"authorization: Bearer {MASTER_KEY}\r\nx-request-id: {rid}\r\n".encode()
        + f"content-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    received = b""
    while b"data: " not in received:
        received += sock.recv(4096)
    sock.close()
    [line] = lines_for(fabric, rid)
    assert line["outcome"] == "client_disconnected" and line["status"] == "200"
    assert line["deployment"] == "fake.0" and "completion_tokens" not in line
    wait_for(lambda: f"req {rid}: cancelled by its client" in fabric.log("worker"))


def test_a_retried_job_carries_the_request_id_into_the_worker_log(
    fabric: Fabric, fake: FakeBackend
) -> None:
    fake.behaviour = Behaviour(status=500, fail_first=len(fake.requests) + 1)  # the next one
    rid = new_id()
    resp = post(fabric, rid)
    assert resp.status_code == 200 and resp.headers["x-inferq-attempts"] == "2"
    worker = [line for line in fabric.log("worker").splitlines() if f"req {rid}" in line]
    assert len(worker) == 1 and "failed on fake.0" in worker[0] and worker[0].endswith("retry")
    [line] = lines_for(fabric, rid)
    assert line["status"] == "200" and line["attempts"] == "2"


def test_a_fallback_and_a_failure_say_where_they_went_and_how_often_they_tried(
    fabric: Fabric, fake: FakeBackend
) -> None:
    # `chained` is [fake, fake-llama]: fake fails twice (num_retries 1), fake-llama answers.
    fake.behaviour = Behaviour(status=500, fail_first=len(fake.requests) + 2)
    rid = new_id()
    assert post(fabric, rid, model="chained").status_code == 200
    [line] = lines_for(fabric, rid)
    assert (line["model"], line["group"], line["deployment"]) == (
        "chained",
        "fake-llama",
        "fake-llama.0",
    )
    assert line["fallback_from"] == "fake" and line["attempts"] == "3"
    worker = [line for line in fabric.log("worker").splitlines() if f"req {rid}:" in line]
    assert [w.rsplit(": ", 1)[1] for w in worker] == ["retry", "fallback"]
    # Past its retries, with no fallback: a 502 naming the deployment and the attempts.
    fake.behaviour = Behaviour(status=500)
    failed = new_id()
    assert post(fabric, failed).status_code == 502
    [line] = lines_for(fabric, failed)
    assert line["status"] == "502" and line["deployment"] == "fake.0" and line["attempts"] == "2"
    assert "prompt_tokens" not in line


def test_an_invalid_request_id_is_replaced(fabric: Fabric) -> None:
    for bad in ("has spaces", "x" * 129, "semi;colon", ""):
        resp = post(fabric, bad or None)
        rid = resp.headers["x-request-id"]
        assert resp.status_code == 200 and rid != bad
        assert re.fullmatch(r"[0-9a-f]{24}", rid)
        assert [line["status"] for line in lines_for(fabric, rid)] == ["200"]
    assert "has spaces" not in fabric.log("api") and "x" * 129 not in fabric.log("api")


def test_rejections_get_a_line_and_never_the_presented_key(fabric: Fabric) -> None:
    rid = new_id()
    wrong = "sk-wrong-" + secrets.token_hex(8)
    url = fabric.base_url + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {wrong}", "x-request-id": rid}
    resp = httpx.post(url, json={"model": "fake", "messages": MESSAGES}, headers=headers)
    assert resp.status_code == 401 and resp.headers["x-request-id"] == rid
    assert resp.json()["error"]["type"] == "authentication_error"  # the OpenAI body, unchanged
    [line] = lines_for(fabric, rid)
    assert line["status"] == "401" and line["outcome"] == "authentication_error"
    assert line["path"] == "/v1/chat/completions"
    # Before a job exists: an unknown model, a body that is not JSON, an unknown route.
    unknown = new_id()
    assert post(fabric, unknown, model="nope").status_code == 400
    assert lines_for(fabric, unknown)[0]["outcome"] == "invalid_request_error"
    garbled = new_id()
    resp = httpx.post(url, content=b"{", headers={**AUTH, "x-request-id": garbled})
    assert resp.status_code == 400 and resp.headers["x-request-id"] == garbled
    assert lines_for(fabric, garbled)[0]["status"] == "400"
    anthropic = new_id()
    resp = httpx.post(
        fabric.base_url + "/v1/messages",
        json={"model": "nope", "max_tokens": 5, "messages": MESSAGES},
        headers={**AUTH, "x-request-id": anthropic},
    )
    assert resp.status_code == 400 and resp.json()["type"] == "error"  # Anthropic's shape
    assert resp.headers["x-request-id"] == anthropic
    assert lines_for(fabric, anthropic)[0]["path"] == "/v1/messages"
    lost = new_id()
    resp = httpx.get(fabric.base_url + "/v2/nothing", headers={**AUTH, "x-request-id": lost})
    assert resp.status_code == 404 and lines_for(fabric, lost)[0]["status"] == "404"
    assert wrong not in fabric.log("api") and MASTER_KEY not in fabric.log("api")


def test_other_routes_carry_a_request_id_and_probes_stay_quiet(fabric: Fabric) -> None:
    rid = new_id()
    resp = httpx.get(fabric.base_url + "/v1/models", headers={**AUTH, "x-request-id": rid})
    assert resp.status_code == 200 and resp.headers["x-request-id"] == rid
    assert lines_for(fabric, rid)[0]["path"] == "/v1/models"
    probe = new_id()
    resp = httpx.get(fabric.base_url + "/health/liveliness", headers={"x-request-id": probe})
    assert resp.headers["x-request-id"] == probe
    assert lines_for(fabric, probe, count=0) == []  # a successful probe logs at DEBUG only


def test_log_json_makes_every_line_of_api_and_worker_json(
    tmp_path: Path, redis_url: str, prefix: str, fake: FakeBackend
) -> None:
    config = write_config(tmp_path / "c.yaml", fake.api_base, prefix)
    fab = Fabric(config, redis_url, tmp_path)
    try:
        fab.start_worker("worker", "--log-json", level="DEBUG")
        fab.start_api("--log-json")
        rid = new_id()
        resp = post(fab, rid, max_tokens=3)
        assert resp.status_code == 200
        refused = new_id()
        httpx.post(
            fab.base_url + "/v1/chat/completions",
            json={},
            headers={"Authorization": "Bearer nope", "x-request-id": refused},
        )
        wait_for(lambda: refused in fab.log("api"))
    finally:
        fab.stop()  # uvicorn's shutdown lines are records too: they must be JSON as well
    records = {}
    for name in ("api", "worker"):
        text = fab.log(name)
        assert text.strip()
        records[name] = [json.loads(line) for line in text.splitlines() if line.strip()]
        for record in records[name]:
            assert {"ts", "level", "logger", "msg"} <= record.keys()
    access = {r["request_id"]: r for r in records["api"] if r["logger"] == "inferq.access"}
    assert tuple(k for k in access[rid] if k in FIELDS) == FIELDS
    assert tuple(k for k in access[refused] if k in FIELDS) == FIELDS
    usage = resp.json()["usage"]
    expected = {
        "method": "POST", "path": "/v1/chat/completions", "model": "fake", "group": "fake",
        "deployment": "fake.0", "status": 200, "outcome": "ok", "ttft_ms": None,
        "prompt_tokens": usage["prompt_tokens"], "completion_tokens": 3,
    }  # fmt: skip
    assert {k: access[rid][k] for k in expected} == expected
    assert access[rid]["latency_ms"] > 0
    assert access[refused]["status"] == 401 and access[refused]["model"] is None
    assert any(r["logger"] == "uvicorn.error" for r in records["api"])
    # At DEBUG, the worker says how each job ended: deployment, status, backend time.
    [done] = [r["msg"] for r in records["worker"] if f"req {rid}: finished" in r["msg"]]
    assert re.search(r"finished on fake\.0, status 200, backend [0-9.]+ ms$", done)


def wait_for(predicate: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)
