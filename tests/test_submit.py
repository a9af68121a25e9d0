"""`inferq submit` end to end: an OpenAI batch file through a real worker and a fake backend,
interrupted, resumed, with malformed lines."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tests.support.fabric import Fabric, write_config
from tests.support.fake_backend import FakeBackend


def line(custom_id: str, model: str = "fake", url: str = "/v1/chat/completions") -> str:
    body = {"model": model, "messages": [{"role": "user", "content": custom_id}], "max_tokens": 2}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def submit(fabric: Fabric, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "REDIS_URL": fabric.redis_url}
    cmd = [sys.executable, "-m", "inferq.cli", "submit", *args, "--config", str(fabric.config)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def output(path: Path) -> list[dict[str, object]]:
    return [json.loads(raw) for raw in path.read_text().splitlines()]


def test_submit_resumes_after_an_interruption_and_reports_bad_lines(
    tmp_path: Path, redis_url: str, prefix: str, backend: FakeBackend
) -> None:
    backend.behaviour.first_token_delay = 0.15
    good = [line(f"q{i}") for i in range(30)]
    bad = [
        "{not json",
        json.dumps({"method": "POST", "url": "/v1/chat/completions", "body": {}}),
        line("q3"),  # a duplicate custom_id
        line("web", url="/v1/images"),
        line("ghost", model="no-such-model"),
    ]
    source = tmp_path / "requests.jsonl"
    source.write_text("\n".join(good[:10] + bad + good[10:]) + "\n")
    out = tmp_path / "results.jsonl"
    fabric = Fabric(
        write_config(tmp_path / "c.yaml", backend.api_base, prefix), redis_url, tmp_path
    )
    try:
        fabric.start_worker("worker", "--group", "fake")
        first = submit(fabric, str(source), "--out", str(out), "--window", "4")
        deadline = time.monotonic() + 20
        while not out.exists() or len(out.read_text().splitlines()) < 12:
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.02)
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=20)
        assert first.returncode == 1, err
        assert "rerun the same command" in err
        written = len(out.read_text().splitlines())
        assert written < 35
        with out.open("a") as f:
            f.write('{"id": "batch_req_x", "custom_id": "q2')  # killed mid-line
        second = submit(fabric, str(source), "--out", str(out), "--window", "4")
        _, err = second.communicate(timeout=60)
        assert second.returncode == 0, err
    finally:
        fabric.stop()

    lines = output(out)
    assert len(lines) == 35  # one per input line
    ids = Counter(item["custom_id"] for item in lines)
    assert all(ids[f"q{i}"] == 1 for i in range(30))
    ok = [item for item in lines if str(item["custom_id"]).startswith("q")]
    for item in ok:
        response = item["response"]
        assert isinstance(response, dict) and response["status_code"] == 200, item
        assert response["body"]["choices"][0]["message"]["content"] == "w0 w1 "
        assert item["error"] is None and str(item["id"]).startswith("batch_req_")
    problems = {item["line"]: item for item in lines if "line" in item}
    assert sorted(problems) == [11, 12, 13, 14]
    assert "not valid JSON" in problems[11]["error"]["message"]
    assert "custom_id is missing" in problems[12]["error"]["message"]
    assert "duplicate custom_id 'q3'" in problems[13]["error"]["message"]
    assert problems[14]["custom_id"] == "web"
    [ghost] = [item for item in lines if item["custom_id"] == "ghost"]
    assert ghost["response"]["status_code"] == 400
    assert ghost["response"]["body"]["error"]["code"] == "model_not_found"
    # Requests in flight at the interruption finished in the fabric and were read from their
    # records: nothing ran twice.
    assert len(backend.requests) == 30


def test_submit_help_has_an_example() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "inferq.cli", "submit", "--help"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0
    assert "inferq submit requests.jsonl --out results.jsonl" in done.stdout
