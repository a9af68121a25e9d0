"""Clients that leave, queues that fill, deadlines that pass while queued."""

import socket
import threading
import time
from collections.abc import Callable

import httpx
import orjson

from tests.faults.conftest import AUTH, deployment, models, settings
from tests.support.fabric import MASTER_KEY, Fabric
from tests.support.fake_backend import FakeBackend

MESSAGES = [{"role": "user", "content": "hi"}]


def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def raw_request(fabric: Fabric, **body: object) -> socket.socket:
    """Send a request on a bare socket, so the test can hang up whenever it likes."""
    payload = orjson.dumps({"model": "g", "messages": MESSAGES, **body})
    sock = socket.create_connection(("127.0.0.1", fabric.port))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + f"authorization: Bearer {MASTER_KEY}\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def one_slot(backend: FakeBackend, **router: object) -> str:
    return models(deployment("g", backend.api_base, max_parallel_requests=1)) + settings(**router)


def test_stream_client_disconnect_aborts_the_backend_call_and_frees_the_slot(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    backend = backends()
    backend.behaviour.token_delay = 0.1
    fabric = fabric_for(one_slot(backend))
    fabric.start_worker()
    fabric.start_api()
    sock = raw_request(fabric, stream=True, max_tokens=200)
    received = b""
    while b"data: " not in received:
        received += sock.recv(4096)
    sock.close()
    hung_up = time.monotonic()
    wait_for(lambda: backend.aborted == 1, 3)
    assert time.monotonic() - hung_up < 1.5
    # The one slot is free again: the next request is served at once.
    backend.behaviour.token_delay = 0
    resp = httpx.post(
        fabric.base_url + "/v1/chat/completions",
        json={"model": "g", "messages": MESSAGES, "max_tokens": 2},
        headers=AUTH,
        timeout=5,
    )
    assert resp.status_code == 200
    assert "cancelled by its client" in fabric.log("worker")


def test_non_stream_client_disconnect_cancels_too(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    backend = backends()
    backend.behaviour.first_token_delay = 30
    fabric = fabric_for(one_slot(backend))
    fabric.start_worker()
    fabric.start_api()
    sock = raw_request(fabric, max_tokens=2)
    wait_for(lambda: backend.active == 1, 5)
    sock.close()
    wait_for(lambda: "cancelled by its client" in fabric.log("worker"), 1.5)
    # The one slot is free again although the backend would have taken 30 s.
    backend.behaviour.first_token_delay = 0
    resp = httpx.post(
        fabric.base_url + "/v1/chat/completions",
        json={"model": "g", "messages": MESSAGES, "max_tokens": 2},
        headers=AUTH,
        timeout=3,
    )
    assert resp.status_code == 200


def test_queued_job_of_a_gone_client_never_reaches_the_backend(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    backend = backends()
    backend.behaviour.first_token_delay = 1.0
    fabric = fabric_for(one_slot(backend))
    fabric.start_worker()
    fabric.start_api()
    first = threading.Thread(
        target=httpx.post,
        args=(fabric.base_url + "/v1/chat/completions",),
        kwargs={"json": {"model": "g", "messages": MESSAGES}, "headers": AUTH, "timeout": 10},
    )
    first.start()
    wait_for(lambda: backend.active == 1, 5)
    queued = raw_request(fabric, max_tokens=2, messages=[{"role": "user", "content": "queued"}])
    time.sleep(0.2)
    queued.close()
    first.join(10)
    time.sleep(1.0)  # the worker is free now and would have served the queued job
    assert [r["messages"][0]["content"] for r in backend.requests] == ["hi"]


def test_full_queue_answers_429_with_retry_after(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    backend = backends()
    backend.behaviour.first_token_delay = 1.0
    yaml = one_slot(backend) + "  queue_limit: 2\n"
    fabric = fabric_for(yaml)
    fabric.start_worker()
    fabric.start_api()
    results: list[httpx.Response] = []

    def call() -> None:
        results.append(
            httpx.post(
                fabric.base_url + "/v1/chat/completions",
                json={"model": "g", "messages": MESSAGES, "max_tokens": 1},
                headers=AUTH,
                timeout=20,
            )
        )

    threads = [threading.Thread(target=call) for _ in range(5)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(20)
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) == 2
    assert codes.count(429) == 3
    refused = next(r for r in results if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert "at capacity" in refused.json()["error"]["message"]


def test_deadline_passing_in_the_queue_is_504_unseen_by_the_backend(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    backend = backends()
    backend.behaviour.first_token_delay = 1.5
    fabric = fabric_for(one_slot(backend))
    fabric.start_worker()
    fabric.start_api()
    busy = threading.Thread(
        target=httpx.post,
        args=(fabric.base_url + "/v1/chat/completions",),
        kwargs={"json": {"model": "g", "messages": MESSAGES}, "headers": AUTH, "timeout": 10},
    )
    busy.start()
    wait_for(lambda: backend.active == 1, 5)
    resp = httpx.post(
        fabric.base_url + "/v1/chat/completions",
        json={"model": "g", "messages": [{"role": "user", "content": "late"}], "timeout": 0.5},
        headers=AUTH,
        timeout=10,
    )
    busy.join(10)
    assert resp.status_code == 504
    time.sleep(0.3)
    assert all(r["messages"][0]["content"] != "late" for r in backend.requests)
