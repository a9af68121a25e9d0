"""The OpenAI Batch API through the official SDK: files, batches, cancel, bad lines, takeover."""

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types import Batch

from tests.support.fabric import MASTER_KEY, Fabric
from tests.support.fake_backend import Behaviour, FakeBackend

CONFIG = """
model_list:
  - model_name: fake
    litellm_params:
      model: openai/fake-model
      api_base: "{api_base}"
      api_key: dummy
      max_parallel_requests: 2
router_settings:
  model_group_alias:
    smart: [fake]
general_settings:
  master_key: {key}
inferq_settings:
  key_prefix: {prefix}
"""


def request_line(custom_id: str, model: str = "fake", url: str = "/v1/chat/completions") -> str:
    body = {"model": model, "messages": [{"role": "user", "content": custom_id}], "max_tokens": 3}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


@pytest.fixture
def fabric(tmp_path: Path, redis_url: str, prefix: str, backend: FakeBackend) -> Iterator[Fabric]:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(api_base=backend.api_base, key=MASTER_KEY, prefix=prefix))
    running = Fabric(config, redis_url, tmp_path)
    try:
        running.start_worker()
        running.start_api()
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(fabric: Fabric) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fabric.base_url + "/v1", api_key=MASTER_KEY, max_retries=0) as c:
        yield c


def upload(client: openai.OpenAI, tmp_path: Path, lines: list[str]) -> str:
    path = tmp_path / "input.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with path.open("rb") as f:
        return client.files.create(file=f, purpose="batch").id


def wait_until(client: openai.OpenAI, batch_id: str, done: Any, within: float = 30) -> Batch:
    deadline = time.monotonic() + within
    while True:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)


def lines_of(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


@pytest.mark.topologies("single", "cluster")
def test_a_batch_runs_to_completed_with_bad_lines_in_the_error_file(
    client: openai.OpenAI, tmp_path: Path, backend: FakeBackend
) -> None:
    good = [request_line(f"q{i}", model="smart" if i % 2 else "fake") for i in range(6)]
    bad = [
        "{not json",
        request_line("wrong-url", url="/v1/embeddings"),
        request_line("no-such-model", model="nope"),
    ]
    file_id = upload(client, tmp_path, good[:3] + bad + good[3:])
    assert client.files.retrieve(file_id).purpose == "batch"

    created = client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    assert created.status == "validating" and created.metadata == {"job": "nightly"}
    batch = wait_until(client, created.id, lambda b: b.status == "completed")

    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (9, 6)
    assert batch.request_counts.failed == 3
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    output = lines_of(client, batch.output_file_id)
    assert sorted(o["custom_id"] for o in output) == [f"q{i}" for i in range(6)]
    for line in output:
        assert line["error"] is None and line["response"]["status_code"] == 200
        assert line["response"]["body"]["choices"][0]["message"]["content"] == "w0 w1 w2 "
    errors = {e["custom_id"]: e for e in lines_of(client, batch.error_file_id)}
    assert set(errors) == {None, "wrong-url", "no-such-model"}
    assert "line 4" in errors[None]["error"]["message"]  # the line that is not JSON
    assert "endpoint" in errors["wrong-url"]["error"]["message"]
    unknown = errors["no-such-model"]
    assert (unknown["response"] or {}).get("status_code", 400) == 400
    assert len(backend.requests) == 6  # bad lines never reached a backend

    with pytest.raises(openai.ConflictError, match="completed"):
        client.batches.cancel(created.id)
    listed = client.batches.list(limit=10)
    assert created.id in [b.id for b in listed.data]
    assert file_id in [f.id for f in client.files.list().data]
    assert client.files.delete(file_id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.content(file_id)


@pytest.mark.topologies("single", "cluster")
def test_cancel_midway_keeps_what_ran(
    client: openai.OpenAI, tmp_path: Path, backend: FakeBackend
) -> None:
    backend.behaviour = Behaviour(first_token_delay=0.25)  # 2 slots: about 8 answers a second
    file_id = upload(client, tmp_path, [request_line(f"q{i}") for i in range(60)])
    created = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_until(client, created.id, lambda b: b.request_counts and b.request_counts.completed >= 4)
    with pytest.raises(openai.ConflictError, match="input of"):
        client.files.delete(file_id)  # the batch still reads it
    cancelling = client.batches.cancel(created.id)
    assert cancelling.status in ("cancelling", "cancelled")
    batch = wait_until(client, created.id, lambda b: b.status == "cancelled")

    assert batch.request_counts is not None
    output = lines_of(client, batch.output_file_id)
    errors = lines_of(client, batch.error_file_id)
    assert 4 <= len(output) < 60
    assert len(output) == batch.request_counts.completed
    assert len(output) + len(errors) == 60
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert len(backend.requests) < 60  # the rest never ran
    assert client.batches.cancel(created.id).status == "cancelled"  # cancelling again: no-op


def test_bad_batch_requests_get_clear_errors(client: openai.OpenAI, tmp_path: Path) -> None:
    with pytest.raises(openai.BadRequestError, match="No such File"):
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    file_id = upload(client, tmp_path, [request_line("a")])
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        client.batches.create(
            input_file_id=file_id,
            endpoint="/v1/images",  # type: ignore[arg-type]
            completion_window="24h",
        )
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        client.batches.create(
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            completion_window="soon",  # type: ignore[arg-type]
        )
    with pytest.raises(openai.BadRequestError, match="at most 168h"):
        client.batches.create(
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            completion_window="99999h",  # type: ignore[arg-type]
        )
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("index")  # a name that is a key of inferq's, not a batch
    with pytest.raises(openai.BadRequestError, match="limit"):
        client.batches.list(limit="\u00b2")  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        client.batches.cancel("batch_nope")
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="assistants")


def test_another_api_process_carries_on_a_batch_whose_driver_died(
    fabric: Fabric, client: openai.OpenAI, tmp_path: Path, backend: FakeBackend
) -> None:
    backend.behaviour = Behaviour(first_token_delay=0.1)
    file_id = upload(client, tmp_path, [request_line(f"q{i}") for i in range(40)])
    created = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_until(client, created.id, lambda b: b.request_counts and b.request_counts.completed >= 2)
    fabric.procs["api"].send_signal(signal.SIGKILL)  # its lease runs out; nobody releases it
    fabric.procs["api"].wait()
    fabric.start_api()
    batch = wait_until(client, created.id, lambda b: b.status == "completed", within=40)
    output = lines_of(client, batch.output_file_id)
    assert sorted(o["custom_id"] for o in output) == sorted(f"q{i}" for i in range(40))
    assert len({o["custom_id"] for o in output}) == 40
