"""Budgets: a warning (log and webhook) past the warning share, and past the limit the group is
out: its alias falls back to the local model, and asking for it directly is a 429."""

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest

from tests.support.fabric import MASTER_KEY, Fabric
from tests.support.fake_backend import BackendThread, FakeBackend

CONFIG = """
model_list:
  - model_name: paid
    litellm_params:
      model: openai/fake-model
      api_base: {api_base}
      input_cost_per_token: 0.001
      output_cost_per_token: 0.001
  - model_name: local
    litellm_params:
      model: openai//models/x.gguf
      api_base: {api_base}
router_settings:
  model_group_alias:
    smart: [paid, local]
general_settings:
  master_key: {key}
inferq_settings:
  key_prefix: {prefix}
  budgets:
    - {{group: paid, period: day, limit: 0.04, warn_at: 0.5}}
  budget_webhook: {hook}
"""
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, object]]]]:
    received: list[dict[str, object]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["content-length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeBackend]:
    thread = BackendThread()
    yield thread.start()
    thread.stop()


def test_budget_warns_then_falls_back_then_refuses(
    fake: FakeBackend,
    webhook: tuple[str, list[dict[str, object]]],
    redis_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    hook_url, alerts = webhook
    config = tmp_path / "c.yaml"
    config.write_text(
        CONFIG.format(api_base=fake.api_base, key=MASTER_KEY, prefix=prefix, hook=hook_url)
    )
    fabric = Fabric(config, redis_url, tmp_path)
    try:
        fabric.start_worker()
        fabric.start_api()
        body = {
            "model": "smart",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "a b"}],
        }
        groups = []
        for _ in range(3):  # each costs (2 + 3 + 10) tokens x $0.001 = $0.015
            resp = httpx.post(fabric.base_url + "/v1/chat/completions", json=body, headers=AUTH)
            groups.append(resp.headers["x-inferq-model-group"])
        assert groups == ["paid", "paid", "paid"]
        deadline = time.monotonic() + 10
        while True:  # usage is flushed every second, budgets summed every two
            resp = httpx.post(fabric.base_url + "/v1/chat/completions", json=body, headers=AUTH)
            if resp.headers.get("x-inferq-model-group") == "local":
                break
            assert time.monotonic() < deadline, "the over-budget group kept serving"
            time.sleep(0.5)
        direct = httpx.post(
            fabric.base_url + "/v1/chat/completions", json={**body, "model": "paid"}, headers=AUTH
        )
        assert direct.status_code == 429
        assert direct.json()["error"]["code"] == "budget_exceeded"
        assert "paid" in direct.json()["error"]["message"]
        kinds = {(a["name"], a["exceeded"]) for a in alerts}
        assert ("paid", False) in kinds  # the warning, at half the budget
        assert ("paid", True) in kinds  # and the limit
        assert "budget alert" in fabric.log("api")
    finally:
        fabric.stop()
