"""Tenants across processes and lanes: team weights, the fair share across two API processes and
in the batch lane, the operator's requests, budgets that stop a running batch, admin keys at the
dashboard, failed authentications counted across processes, and Anthropic-format auth errors.

Two real `inferq api` processes, a worker and a fake backend on one Redis; the official
`openai` and `anthropic` SDKs, `inferq.connect` and `inferq submit` as clients."""

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from inferq.broker.batch.submit import BatchRequest
from inferq.broker.messages import JobKind
from inferq.client import connect
from tests.support.fabric import MASTER_KEY, Fabric, key_id
from tests.support.fake_backend import Behaviour, FakeBackend

CONFIG = """
model_list:
  - model_name: fast
    litellm_params:
      model: openai/fast-model
      api_base: {api_base}
      api_key: dummy
      max_tokens: 5
  - model_name: slow
    litellm_params:
      model: openai/slow-model
      api_base: {api_base}
      api_key: dummy
      max_tokens: 5
      max_parallel_requests: 2
  - model_name: paid
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {api_base}
      api_key: dummy
      max_tokens: 5
      max_parallel_requests: 4
general_settings:
  master_key: {key}
inferq_settings:
  key_prefix: {prefix}
"""
ADMIN = {"Authorization": f"Bearer {MASTER_KEY}"}
HELLO = [{"role": "user", "content": "hello there"}]


class Two:
    """Two API processes (and a worker) on one Redis."""

    def __init__(self, first: Fabric, second: Fabric) -> None:
        self.first = first
        self.second = second

    def generate(self, **settings: Any) -> str:
        resp = httpx.post(self.first.base_url + "/key/generate", json=settings, headers=ADMIN)
        assert resp.status_code == 200, resp.text
        key: str = resp.json()["key"]
        return key

    def status(self) -> dict[str, Any]:
        """`inferq status --json`."""
        return self.first.status()

    def share(self, group: str, key: str) -> dict[str, int]:
        """The key's queue on a group, as `inferq status` shows it."""
        per_key = self.status()["keys"].get(group, {})
        found: dict[str, int] = per_key.get(key_id(key), {"in_flight": 0, "waiting": 0})
        return found


@pytest.fixture(scope="module")
def two(
    fake: FakeBackend, redis_url: str, module_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Two]:
    tmp = tmp_path_factory.mktemp("shares")
    config = tmp / "config.yaml"
    config.write_text(CONFIG.format(api_base=fake.api_base, key=MASTER_KEY, prefix=module_prefix))
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    first, second = Fabric(config, redis_url, tmp / "a"), Fabric(config, redis_url, tmp / "b")
    try:
        first.start_worker()
        first.start_api()
        second.start_api()
        yield Two(first, second)
    finally:
        first.stop()
        second.stop()


@pytest.fixture(autouse=True)
def calm(fake: FakeBackend) -> None:
    fake.behaviour = Behaviour()


def flood(base_url: str, key: str, n: int, codes: list[int], model: str = "slow") -> list[Any]:
    """`n` concurrent requests of `key` (threads, started); their statuses go to `codes`."""

    def one() -> None:
        resp = httpx.post(
            base_url + "/v1/chat/completions",
            json={"model": model, "messages": HELLO},
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )
        codes.append(resp.status_code)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def test_a_teams_weight_gives_its_keys_a_larger_share(two: Two, fake: FakeBackend) -> None:
    made = httpx.post(two.first.base_url + "/team/new",
                      json={"team_alias": "research", "priority": 3}, headers=ADMIN)  # fmt: skip
    assert made.status_code == 200, made.text
    team = made.json()["team_id"]
    weighted, plain = two.generate(team_id=team), two.generate()
    info = httpx.get(two.second.base_url + "/team/info", params={"team_id": team}, headers=ADMIN)
    assert info.json()["team_info"]["priority"] == 3
    assert info.json()["keys"] == [key_id(weighted)]
    refused = httpx.get(two.first.base_url + "/team/list",
                        headers={"Authorization": f"Bearer {plain}"})  # fmt: skip
    assert refused.status_code == 403
    fake.behaviour = Behaviour(complete_delay=0.4)
    codes: list[int] = []
    threads = flood(two.first.base_url, weighted, 20, codes) + flood(
        two.first.base_url, plain, 20, codes
    )
    time.sleep(1.5)
    # 2 slots: a key may have 2 running + 2 queued, times its weight (its team's 3).
    assert two.share("slow", weighted)["in_flight"] == 12
    assert two.share("slow", plain)["in_flight"] == 4
    for t in threads:
        t.join(60)
    assert codes == [200] * 40
    lighter = httpx.post(two.first.base_url + "/team/update",
                         json={"team_id": team, "priority": 1}, headers=ADMIN)  # fmt: skip
    assert lighter.json()["priority"] == 1
    threads = flood(two.second.base_url, weighted, 12, codes)
    time.sleep(1.5)
    assert two.share("slow", weighted)["in_flight"] == 4  # the new weight, on every process
    for t in threads:
        t.join(60)
    gone = httpx.post(two.first.base_url + "/team/delete", json={"team_ids": [team]},
                      headers=ADMIN)  # fmt: skip
    assert gone.json() == {"deleted_teams": [team]}


def test_the_share_holds_across_api_processes(two: Two, fake: FakeBackend) -> None:
    flooder = two.generate()
    fake.behaviour = Behaviour(complete_delay=0.8)  # 40 jobs on 2 slots: a 16 s backlog
    codes: list[int] = []
    threads = flood(two.first.base_url, flooder, 20, codes)
    threads += flood(two.second.base_url, flooder, 20, codes)
    try:
        # Each process admitted up to the whole share (4) at first; within a second or two
        # they learn the key is spread over both and admit half each: 4 in flight between
        # them, the rest waiting. Each process writes its view once a second, so a first
        # reading may show one process alone (at most its 20 requests): wait for one that
        # shows both, and the share held.
        deadline = time.monotonic() + 8
        while True:
            share = two.share("slow", flooder)
            if share["in_flight"] <= 4 and share["in_flight"] + share["waiting"] > 20:
                break
            assert time.monotonic() < deadline, share
            time.sleep(0.2)
        time.sleep(1.0)
        assert two.share("slow", flooder)["in_flight"] <= 4  # and it stays so
    finally:
        for t in threads:
            t.join(60)
    assert codes == [200] * 40


def test_the_master_key_is_not_held_back(two: Two, fake: FakeBackend) -> None:
    key = two.generate()
    fake.behaviour = Behaviour(complete_delay=0.5)
    codes: list[int] = []
    threads = flood(two.first.base_url, MASTER_KEY, 20, codes)
    time.sleep(1.0)
    slow = two.status()["groups"]["slow"]
    assert slow["waiting"] + slow["running"] >= 12  # the operator's jobs are all queued
    for t in threads:
        t.join(60)
    threads = flood(two.first.base_url, key, 20, codes)
    time.sleep(1.5)
    status = two.status()
    slow = status["groups"]["slow"]
    assert slow["waiting"] + slow["running"] <= 4  # a key's: its share, the rest wait
    assert status["keys"]["slow"][key_id(key)]["waiting"] >= 8
    for t in threads:
        t.join(60)
    assert codes == [200] * 40


def test_a_keys_batch_flood_does_not_starve_another_keys_batch(two: Two, fake: FakeBackend) -> None:
    a, b = two.generate(), two.generate()
    fake.behaviour = Behaviour(complete_delay=0.3)
    config, url = two.first.config, two.first.redis_url
    finished_a: list[float] = []

    async def flood_a() -> None:
        requests = [BatchRequest(f"a{i}", JobKind.CHAT, {"model": "slow", "messages": HELLO})
                    for i in range(30)]  # fmt: skip
        async with connect(config, url, key=a) as client:
            async for outcome in client.submit("flood-a", requests, window=30):
                assert outcome.ok
                finished_a.append(time.monotonic())

    async def one_of_b() -> float:
        request = BatchRequest("b", JobKind.CHAT, {"model": "slow", "messages": HELLO})
        async with connect(config, url, key=b) as client:
            async for outcome in client.submit("one-of-b", [request]):
                assert outcome.ok
        return time.monotonic()

    async def both() -> float:
        flooding = asyncio.create_task(flood_a())
        await asyncio.sleep(1.5)
        share = await asyncio.to_thread(two.share, "slow", a)
        assert 1 <= share["batch"] <= 2  # one batch slot (of 2): one running, one queued
        b_done = await one_of_b()
        await flooding
        return b_done

    b_done = asyncio.run(both())
    assert len(finished_a) == 30
    # 30 jobs of 0.3 s on one batch slot take 9 s; B's came after at most a few of them.
    assert sum(t < b_done for t in finished_a) < 15


def test_a_running_batch_stops_when_its_keys_budget_is_spent(two: Two, fake: FakeBackend) -> None:
    key = two.generate(models=["paid"], max_budget=0.00002)
    fake.behaviour = Behaviour(complete_delay=0.3)
    requests = [BatchRequest(f"r{i}", JobKind.CHAT, {"model": "paid", "messages": HELLO})
                for i in range(40)]  # fmt: skip

    async def run() -> list[Any]:
        async with connect(two.first.config, two.first.redis_url, key=key) as client:
            return [o async for o in client.submit("spender", requests, window=40)]

    outcomes = asyncio.run(run())
    assert len(outcomes) == 40
    ran = [o for o in outcomes if o.ok]
    stopped = [o for o in outcomes if not o.ok]
    assert ran and stopped, (len(ran), len(stopped))
    for o in stopped:
        assert o.reply.error is not None
        assert (o.status, o.reply.error.code) == (429, "budget_exceeded")
        assert "budget" in o.reply.error.message and key[3:15] not in o.reply.error.message
    info = httpx.get(two.first.base_url + "/key/info", params={"key": key}, headers=ADMIN).json()
    assert info["info"]["spend"] >= 0.00002


def submit_cli(two: Two, tmp: Path, key: str) -> subprocess.CompletedProcess[str]:
    line = {"custom_id": "x", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "paid", "messages": HELLO}}  # fmt: skip
    (tmp / "in.jsonl").write_text(json.dumps(line) + "\n")
    return two.first.cli(
        "submit", str(tmp / "in.jsonl"), "--out", str(tmp / "out.jsonl"), "--key", key, timeout=60
    )


def test_inferq_submit_checks_the_key_before_queueing(two: Two, tmp_path: Path) -> None:
    spent = two.generate(models=["paid"], max_budget=0.0000001)
    with openai.OpenAI(base_url=two.first.base_url + "/v1", api_key=spent, max_retries=0) as c:
        c.chat.completions.create(model="paid", messages=HELLO)  # type: ignore[arg-type]
    time.sleep(1.5)  # spend is written once a second
    over = submit_cli(two, tmp_path, spent)
    assert over.returncode == 2
    assert "budget" in over.stderr and "Nothing was queued" in over.stderr
    assert not (tmp_path / "out.jsonl").exists() or not (tmp_path / "out.jsonl").read_text()
    revoked = two.generate()
    httpx.post(two.first.base_url + "/key/delete", json={"keys": [revoked]}, headers=ADMIN)
    gone = submit_cli(two, tmp_path, revoked)
    assert gone.returncode == 2 and "invalid key" in gone.stderr
    assert revoked[3:15] not in gone.stderr + gone.stdout


def test_admin_keys_log_in_to_the_dashboard_and_ordinary_keys_are_told_why_not(two: Two) -> None:
    admin, user = two.generate(role="admin"), two.generate()
    with httpx.Client(base_url=two.second.base_url, follow_redirects=False) as browser:
        assert browser.get("/ui").status_code == 401  # the login form
        refused = browser.post("/ui/login", data={"master_key": user})
        assert refused.status_code == 403 and "not an admin key" in refused.text
        assert user[3:15] not in refused.text
        wrong = browser.post("/ui/login", data={"master_key": "sk-" + "z" * 43})
        assert wrong.status_code == 401
        ok = browser.post("/ui/login", data={"master_key": admin})
        assert ok.status_code == 303
        assert admin[3:15] not in ok.headers["set-cookie"]
        assert browser.get("/ui").status_code == 200
        assert browser.get("/ui/data").status_code == 200
        # Revoked on the other process: the cookie stops working at once.
        httpx.post(two.first.base_url + "/key/delete", json={"keys": [admin]}, headers=ADMIN)
        time.sleep(0.5)
        assert browser.get("/ui/data").status_code == 401
        assert browser.get("/ui").status_code == 401


def test_failed_authentications_are_counted_across_api_processes(two: Two) -> None:
    clients = [
        httpx.Client(base_url=fabric.base_url,
                     transport=httpx.HTTPTransport(local_address="127.0.0.3"))
        for fabric in (two.first, two.second)
    ]  # fmt: skip
    codes = []
    try:
        for i in range(14):  # alternating: 7 failures on each process
            resp = clients[i % 2].get(
                "/v1/models", headers={"Authorization": f"Bearer sk-guess{i:040d}"}
            )
            codes.append(resp.status_code)
    finally:
        for c in clients:
            c.close()
    assert codes[:12] == [401] * 12
    assert codes[12:] == [429, 429]  # 12 between them, not 12 on each
    other = httpx.get(two.first.base_url + "/v1/models", headers=ADMIN)
    assert other.status_code == 200


def test_auth_errors_on_the_messages_route_are_in_anthropics_format(two: Two) -> None:
    client = anthropic.Anthropic(base_url=two.first.base_url, api_key="sk-" + "w" * 43,
                                 max_retries=0)  # fmt: skip
    with pytest.raises(anthropic.AuthenticationError) as refused:
        client.messages.create(model="fast", max_tokens=5,
                               messages=[{"role": "user", "content": "hi"}])  # fmt: skip
    body = refused.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    plain = httpx.post(two.first.base_url + "/v1/chat/completions", json={"model": "fast"},
                       headers={"Authorization": "Bearer sk-" + "w" * 43})  # fmt: skip
    assert plain.status_code == 401 and "type" not in plain.json()  # OpenAI's format there
