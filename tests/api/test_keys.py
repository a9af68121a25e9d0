"""Virtual keys end to end: two real `inferq api` processes sharing one Redis, a worker, a fake
backend, and the official `openai` SDK as the client of keys made through `/key/generate`."""

import asyncio
import io
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.support.fabric import MASTER_KEY, Fabric, key_id
from tests.support.fake_backend import Behaviour, FakeBackend

CONFIG = """
model_list:
  - model_name: fake
    litellm_params:
      model: openai/fake-model
      api_base: {api_base}
      api_key: dummy
      max_tokens: 5
      max_parallel_requests: 8
  - model_name: other
    litellm_params:
      model: openai/other-model
      api_base: {api_base}
      api_key: dummy
      max_tokens: 5
  - model_name: paid
    litellm_params:
      model: openai/gpt-4o-mini
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
router_settings:
  model_group_alias:
    chained: [fake, other]
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
        self.keys: list[str] = []  # every key generated, to look for in Redis

    def generate(self, **settings: Any) -> str:
        resp = httpx.post(self.first.base_url + "/key/generate", json=settings, headers=ADMIN)
        assert resp.status_code == 200, resp.text
        key: str = resp.json()["key"]
        self.keys.append(key)
        return key

    def client(self, key: str, which: int = 1) -> openai.OpenAI:
        fabric = self.first if which == 1 else self.second
        return openai.OpenAI(base_url=fabric.base_url + "/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def two(
    fake: FakeBackend, redis_url: str, module_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Two]:
    tmp = tmp_path_factory.mktemp("keys")
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


def chat(client: openai.OpenAI, model: str = "fake") -> str:
    done = client.chat.completions.create(model=model, messages=HELLO)  # type: ignore[arg-type]
    return done.model


def test_a_key_uses_only_its_models(two: Two) -> None:
    key = two.generate(models=["fake"], key_alias="only-fake")
    with two.client(key) as client:
        assert chat(client) == "fake"
        assert [m.id for m in client.models.list()] == ["fake"]
        with pytest.raises(openai.PermissionDeniedError) as refused:
            chat(client, "other")
        error = refused.value.body
        assert isinstance(error, dict)
        assert error["type"] == "permission_denied"
        assert "fake" in error["message"]
        with pytest.raises(openai.PermissionDeniedError):
            chat(client, "chained")  # an alias counts as itself


def test_an_alias_never_leads_into_a_group_the_key_may_not_use(two: Two, fake: FakeBackend) -> None:
    key = two.generate(models=["other"])
    with httpx.Client(base_url=two.first.base_url) as http:
        body = {"model": "other", "messages": HELLO, "fallbacks": ["fake"]}
        resp = http.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        assert resp.status_code == 200
        assert resp.headers["x-inferq-model-group"] == "other"
    chained = two.generate(models=["chained"])
    with two.client(chained) as client:
        assert chat(client, "chained") == "chained"


def test_unknown_expired_and_revoked_keys_get_the_same_401(two: Two) -> None:
    short = two.generate(duration="1s")
    revoked = two.generate()
    with two.client(revoked, 2) as client:
        chat(client)  # cached on the second process
    started = time.monotonic()
    resp = httpx.post(two.first.base_url + "/key/delete", json={"keys": [revoked]}, headers=ADMIN)
    assert resp.json()["deleted_keys"]
    messages = set()
    for key in ("sk-" + "x" * 43, revoked):
        with two.client(key, 2) as client:
            while True:
                try:
                    chat(client)
                except openai.AuthenticationError as exc:
                    messages.add(exc.message)
                    break
                assert time.monotonic() - started < 1.0, "the revoked key still works"
                time.sleep(0.05)
    time.sleep(max(0.0, 1.1 - (time.monotonic() - started)))
    with two.client(short) as client, pytest.raises(openai.AuthenticationError) as expired:
        chat(client)
    messages.add(expired.value.message)
    assert len(messages) == 1  # never saying which part was wrong


def test_roles(two: Two) -> None:
    user = two.generate()
    admin = two.generate(role="admin")
    for path in ("/key/list", "/ui/status", "/metrics", "/health"):
        got = httpx.get(two.first.base_url + path, headers={"Authorization": f"Bearer {user}"})
        assert got.status_code == 403, path
        assert got.json()["error"]["type"] == "permission_denied"
    made = httpx.post(
        two.second.base_url + "/key/generate",
        json={"models": ["fake"]},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert made.status_code == 200
    two.keys.append(made.json()["key"])
    mine = httpx.get(two.first.base_url + "/key/info", headers={"Authorization": f"Bearer {user}"})
    assert mine.status_code == 200
    theirs = httpx.get(
        two.first.base_url + "/key/info",
        params={"key": made.json()["key"]},
        headers={"Authorization": f"Bearer {user}"},
    )
    assert theirs.status_code == 403
    with two.client(user) as client:
        chat(client)
    time.sleep(1.2)  # usage is written once a second
    usage = httpx.get(two.first.base_url + "/usage", headers={"Authorization": f"Bearer {user}"})
    assert usage.status_code == 200
    assert list(usage.json()["by_key"]) == [mine.json()["info"]["key_id"]]
    assert usage.json()["totals"]["requests"] >= 1
    everyone = httpx.get(two.first.base_url + "/usage", headers=ADMIN).json()
    assert len(everyone["by_key"]) >= 2


def test_rpm_limit_is_counted_across_api_processes(two: Two) -> None:
    key = two.generate(rpm_limit=2)
    if 60 - time.time() % 60 < 5:
        time.sleep(60 - time.time() % 60)  # all in one minute window
    with two.client(key, 1) as one, two.client(key, 2) as other:
        chat(one)
        chat(other)
        with pytest.raises(openai.RateLimitError) as refused:
            chat(one)
    assert refused.value.response.headers["retry-after"].isdigit()
    assert refused.value.code == "rpm_limit"


def test_tpm_limit(two: Two) -> None:
    key = two.generate(tpm_limit=5)
    if 60 - time.time() % 60 < 5:
        time.sleep(60 - time.time() % 60)
    with two.client(key) as client:
        chat(client)  # about 2 + 5 tokens: over the limit once counted (within a second)
        time.sleep(1.3)
        with pytest.raises(openai.RateLimitError) as refused:
            chat(client)
    assert refused.value.code == "tpm_limit"


@pytest.mark.topologies("single", "cluster")
def test_max_parallel_requests(two: Two, fake: FakeBackend) -> None:
    key = two.generate(max_parallel_requests=1)
    fake.behaviour = Behaviour(complete_delay=1.0)
    results: list[object] = []

    def call() -> None:
        with two.client(key, 2) as client:
            try:
                results.append(chat(client))
            except openai.APIStatusError as exc:
                results.append(exc.status_code)

    first = threading.Thread(target=call)
    first.start()
    time.sleep(0.4)
    call()
    first.join()
    assert sorted(map(str, results)) == ["429", "fake"]
    fake.behaviour = Behaviour()
    call()  # the slot was freed when the first ended
    assert results[-1] == "fake"


@pytest.mark.topologies("single", "cluster")
def test_budget_is_enforced_and_counts_the_model_price_even_on_a_local_address(
    two: Two,
) -> None:
    # gpt-4o-mini through an api_base on 127.0.0.1 is still priced as gpt-4o-mini.
    key = two.generate(models=["paid"], max_budget=0.000001, budget_duration="1d")
    with two.client(key) as client:
        chat(client, "paid")
        deadline = time.monotonic() + 5
        while True:
            try:
                chat(client, "paid")
            except openai.RateLimitError as exc:
                assert exc.code == "budget_exceeded"
                break
            assert time.monotonic() < deadline, "the key kept spending past its budget"
            time.sleep(0.3)
        file_id = _upload(client)
        with pytest.raises(openai.RateLimitError) as no_batch:
            client.batches.create(
                input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        assert no_batch.value.code == "budget_exceeded"
    info = httpx.get(two.second.base_url + "/key/info", params={"key": key}, headers=ADMIN)
    assert info.json()["info"]["spend"] > 0.000001
    assert info.json()["info"]["budget_reset_at"]


def _upload(client: openai.OpenAI) -> str:
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "fake", "messages": HELLO}}  # fmt: skip
    data = io.BytesIO(json.dumps(line).encode() + b"\n")
    return client.files.create(file=("in.jsonl", data), purpose="batch").id


def test_a_key_sees_only_its_own_files_and_batches(two: Two) -> None:
    alice, bob = two.generate(), two.generate()
    with two.client(alice) as a, two.client(bob, 2) as b:
        file_id = _upload(a)
        batch = a.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert a.files.retrieve(file_id).id == file_id
        assert a.batches.retrieve(batch.id).id == batch.id
        with pytest.raises(openai.NotFoundError):
            b.files.retrieve(file_id)
        with pytest.raises(openai.NotFoundError):
            b.files.content(file_id)
        with pytest.raises(openai.NotFoundError):
            b.batches.retrieve(batch.id)
        with pytest.raises(openai.NotFoundError):
            b.batches.cancel(batch.id)
        with pytest.raises(openai.NotFoundError):
            b.files.delete(file_id)
        with pytest.raises(openai.BadRequestError):
            b.batches.create(
                input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        assert file_id not in [f.id for f in b.files.list()]
        assert batch.id not in [x.id for x in b.batches.list()]
        assert file_id in [f.id for f in a.files.list()]
        assert batch.id in [x.id for x in a.batches.list()]
    with two.client(MASTER_KEY) as admin:
        assert admin.batches.retrieve(batch.id).id == batch.id


@pytest.mark.topologies("single", "cluster")
def test_update_and_regenerate_reach_every_process(two: Two) -> None:
    key = two.generate(models=["fake"], key_alias="changing")
    with two.client(key, 2) as client:
        chat(client)
        resp = httpx.post(
            two.first.base_url + "/key/update",
            json={"key": key, "models": ["other"]},
            headers=ADMIN,
        )
        assert resp.json()["models"] == ["other"]
        time.sleep(0.5)
        with pytest.raises(openai.PermissionDeniedError):
            chat(client)
        assert chat(client, "other") == "other"
    with two.client(key) as client:
        file_id = _upload(client)
    fresh = httpx.post(two.first.base_url + "/key/regenerate", json={"key": key}, headers=ADMIN)
    new_key = fresh.json()["key"]
    two.keys.append(new_key)
    assert fresh.json()["key_alias"] == "changing"
    assert fresh.json()["key_id"] == resp.json()["key_id"]  # its usage and budget carry on
    with two.client(new_key, 2) as client:
        assert client.files.retrieve(file_id).id == file_id  # and its files stay its own
    time.sleep(0.5)
    with two.client(key, 2) as old, pytest.raises(openai.AuthenticationError):
        chat(old, "other")
    with two.client(new_key, 2) as new:
        assert chat(new, "other") == "other"
    listed = httpx.get(two.first.base_url + "/key/list", headers=ADMIN).json()
    assert fresh.json()["token"] in listed["keys"]
    gone = httpx.post(
        two.first.base_url + "/key/delete", json={"key_aliases": ["changing"]}, headers=ADMIN
    )
    assert gone.json()["deleted_keys"] == [fresh.json()["token"]]


def test_redis_never_holds_a_key_in_plain_text(
    two: Two, redis_url: str, module_prefix: str
) -> None:
    made = [two.generate(metadata={"owner": "scan"}), two.generate(rpm_limit=100, tpm_limit=10**6,
            max_parallel_requests=5, max_budget=10.0, budget_duration="1h")]  # fmt: skip
    for key in made:
        with two.client(key, 2) as client:
            chat(client)
            _upload(client)
    time.sleep(1.2)  # usage and last-used times are written within a second
    client = redis.Redis.from_url(redis_url)
    seen = 0
    try:
        for name in client.scan_iter(match=f"{module_prefix}:*", count=1000):
            blob = _dump(client, name)
            seen += 1
            for key in two.keys:
                assert key.encode() not in blob, name
                assert key[3:15].encode() not in blob, name  # nor a prefix of it
    finally:
        client.close()
    assert seen > 10
    for fabric in (two.first, two.second):
        for name in ("api", "worker"):
            log = fabric.log(name)
            assert not any(k[3:15] in log for k in two.keys)


def _dump(client: redis.Redis, name: bytes) -> bytes:
    """Every byte a key holds, whatever its type."""
    readers: dict[bytes, Any] = {
        b"string": lambda: [client.get(name) or b""],
        b"hash": lambda: [k + b"=" + v for k, v in client.hgetall(name).items()],
        b"set": lambda: list(client.smembers(name)),
        b"zset": lambda: client.zrange(name, 0, -1),
        b"list": lambda: client.lrange(name, 0, -1),
        b"stream": lambda: [
            k + b"=" + v for _, fields in client.xrange(name) for k, v in fields.items()
        ],
    }
    kind = client.type(name)
    assert kind in readers, kind
    return b" ".join(readers[kind]())


def test_bad_key_bodies_get_a_clear_400(two: Two) -> None:
    for body in (
        {"budget_duration": "soon"},
        {"models": ["no-such-model"]},
        {"rpm_limit": -1},
        {"key": "not-sk-prefixed-but-long-enough"},
    ):
        resp = httpx.post(two.first.base_url + "/key/generate", json=body, headers=ADMIN)
        assert resp.status_code == 400, body
        assert resp.json()["error"]["type"] == "invalid_request_error"


def _cli(fabric: Fabric, *args: str) -> subprocess.CompletedProcess[str]:
    return fabric.cli("keys", *args)


def test_operators_manage_keys_from_the_command_line(two: Two) -> None:
    made = _cli(two.first, "create", "--alias", "from-cli", "--models", "fake", "--rpm", "30")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    two.keys.append(key)
    assert key.startswith("sk-") and len(key) >= 40
    with two.client(key, 2) as client:
        assert chat(client) == "fake"
    listed = _cli(two.first, "list").stdout
    assert "from-cli" in listed and "rpm=30" in listed and key[3:15] not in listed
    info = json.loads(_cli(two.first, "info", "from-cli").stdout)
    assert info["models"] == ["fake"] and info["rpm_limit"] == 30
    assert _cli(two.first, "create", "--models", "nope").returncode == 2
    assert _cli(two.first, "revoke", "from-cli").returncode == 0
    time.sleep(0.3)
    with two.client(key, 2) as client, pytest.raises(openai.AuthenticationError):
        chat(client)
    assert _cli(two.first, "revoke", "from-cli").returncode == 1


def _line(custom_id: str, model: str) -> bytes:
    body = {"model": model, "messages": HELLO}
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    return json.dumps(line).encode() + b"\n"


@pytest.mark.topologies("single", "cluster")
def test_batch_work_runs_under_the_key_that_made_it(two: Two) -> None:
    key = two.generate(models=["paid"], max_budget=5.0, budget_duration="1d")
    with two.client(key) as client:
        data = io.BytesIO(_line("allowed", "paid") + _line("not-allowed", "fake"))
        file_id = client.files.create(file=("in.jsonl", data), purpose="batch").id
        batch = client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        deadline = time.monotonic() + 60
        while batch.status not in ("completed", "failed", "cancelled", "expired"):
            assert time.monotonic() < deadline, batch.status
            time.sleep(0.3)
            batch = client.batches.retrieve(batch.id)
        assert batch.status == "completed"
        assert batch.output_file_id and batch.error_file_id
        output = client.files.content(batch.output_file_id).text
        errors = client.files.content(batch.error_file_id).text
    assert '"allowed"' in output
    assert '"not-allowed"' in errors and "permission_denied" in errors
    info = httpx.get(two.first.base_url + "/key/info", params={"key": key}, headers=ADMIN).json()
    assert info["info"]["spend"] > 0  # the batch's paid request counts against the budget
    usage = httpx.get(two.first.base_url + "/usage", headers={"Authorization": f"Bearer {key}"})
    assert usage.json()["totals"]["requests"] >= 1


def test_the_direct_client_names_the_key_it_runs_under(two: Two, module_prefix: str) -> None:
    from inferq.broker.batch.submit import BatchRequest
    from inferq.broker.messages import JobKind
    from inferq.client import connect

    key = two.generate(models=["fake"])
    requests = [
        BatchRequest("ok", JobKind.CHAT, {"model": "fake", "messages": HELLO}),
        BatchRequest("no", JobKind.CHAT, {"model": "other", "messages": HELLO}),
    ]

    async def run() -> dict[str, int]:
        async with connect(two.first.config, two.first.redis_url, key=key) as client:
            return {
                o.custom_id or "": o.reply.error.status if o.reply.error else 200
                async for o in client.submit("keyed-run", requests, window=4)
            }

    assert asyncio.run(run()) == {"ok": 200, "no": 403}

    async def invalid() -> None:
        async with connect(two.first.config, two.first.redis_url, key="sk-" + "y" * 43):
            pass

    with pytest.raises(ValueError, match="invalid key"):
        asyncio.run(invalid())


def test_a_flood_of_one_key_does_not_starve_another(two: Two, fake: FakeBackend) -> None:
    flooder, other = two.generate(), two.generate()
    fake.behaviour = Behaviour(complete_delay=0.3)
    codes: list[int] = []

    def flood() -> None:
        resp = httpx.post(
            two.first.base_url + "/v1/chat/completions",
            json={"model": "slow", "messages": HELLO},
            headers={"Authorization": f"Bearer {flooder}"},
            timeout=60,
        )
        codes.append(resp.status_code)

    threads = [threading.Thread(target=flood) for _ in range(40)]
    for t in threads:
        t.start()
    # 40 jobs on 2 slots of 0.3 s: 6 s of backlog. The API writes its view once a second, so
    # a first one may predate most of the flood: wait for one that shows it held.
    deadline = time.monotonic() + 4
    while True:
        shares = two.first.status()["keys"].get("slow", {})
        share = shares.get(key_id(flooder), {"waiting": 0})
        if share["waiting"] > 10:
            break
        assert time.monotonic() < deadline, share
        time.sleep(0.2)
    assert share["in_flight"] == 4  # 2 slots: 2 running, 2 queued
    with two.client(other) as client:
        started = time.monotonic()
        chat(client, "slow")
        waited = time.monotonic() - started
    for t in threads:
        t.join(60)
    assert waited < 1.5, f"served after {waited:.2f} s, behind the other key's backlog"
    assert codes == [200] * 40  # the flood is served too, only not ahead of everyone


def test_guessing_keys_is_slowed_then_refused_for_that_address_only(two: Two) -> None:
    good = two.generate()
    guesser = httpx.Client(
        base_url=two.second.base_url, transport=httpx.HTTPTransport(local_address="127.0.0.2")
    )
    times, codes = [], []
    try:
        for i in range(14):
            started = time.monotonic()
            resp = guesser.get("/v1/models", headers={"Authorization": f"Bearer sk-guess{i:040d}"})
            times.append(time.monotonic() - started)
            codes.append(resp.status_code)
        assert codes[:12] == [401] * 12
        assert codes[12:] == [429, 429]
        assert int(resp.headers["retry-after"]) > 0
        assert max(times[6:12]) > 0.3 > max(times[:4])  # slowed before it was refused
        # Refused for a while, even with a good key; everyone else is served as usual.
        ok = guesser.get("/v1/models", headers={"Authorization": f"Bearer {good}"})
        assert ok.status_code == 429
    finally:
        guesser.close()
    started = time.monotonic()
    mine = httpx.get(
        two.second.base_url + "/v1/models", headers={"Authorization": f"Bearer {good}"}
    )
    assert mine.status_code == 200 and time.monotonic() - started < 0.3


def test_no_key_shows_in_health_metrics_usage_or_errors(two: Two) -> None:
    key = two.generate(models=["fake"])
    with two.client(key) as client:
        chat(client)
        with pytest.raises(openai.PermissionDeniedError) as refused:
            chat(client, "other")
    assert key[3:15] not in str(refused.value.body)
    bad = httpx.post(two.first.base_url + "/v1/chat/completions", json={"model": "fake"},
                     headers={"Authorization": f"Bearer {key}x"})  # fmt: skip
    assert bad.status_code == 401 and key[3:15] not in bad.text
    time.sleep(1.2)
    for path in ("/health", "/metrics", "/usage", "/key/list?return_full_object=true"):
        text = httpx.get(two.first.base_url + path, headers=ADMIN).text
        for made in two.keys:
            assert made[3:15] not in text, path


def test_bodies_of_absurd_shape_get_a_clear_400(two: Two) -> None:
    key = two.generate()
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    deep = (
        b'{"model": "fake", "messages": [{"role": "user", "content": "hi"}], "x": '
        + (b"[" * 40 + b"]" * 40)
        + b"}"
    )
    many = json.dumps({"model": "fake", "messages": [{"role": "user", "content": "a"}] * 10_001})
    for body in (deep, many.encode()):
        resp = httpx.post(two.first.base_url + "/v1/chat/completions", content=body,
                          headers=headers)  # fmt: skip
        assert resp.status_code == 400
        assert resp.json()["error"]["type"] == "invalid_request_error"
        assert "too large in shape" in resp.json()["error"]["message"]


def test_the_dashboard_lists_keys_with_limits_and_spend(two: Two) -> None:
    key = two.generate(key_alias="on-the-wall", rpm_limit=50, max_budget=2.0, budget_duration="7d")
    with two.client(key) as client:
        chat(client)
    time.sleep(1.2)
    data = httpx.get(two.second.base_url + "/ui/data", headers=ADMIN)
    shown = next(k for k in data.json()["keys"] if k["alias"] == "on-the-wall")
    assert shown["rpm_limit"] == 50 and shown["max_budget"] == 2.0
    assert (shown["requests_today"] == 1 and shown["last_used"] is None) or shown["last_used"] > 0
    assert key[3:15] not in data.text
    denied = httpx.get(two.second.base_url + "/ui/data", headers={"Authorization": f"Bearer {key}"})
    assert denied.status_code == 403


def test_a_key_reads_and_continues_only_its_own_stored_responses(two: Two) -> None:
    alice, bob = two.generate(key_alias="resp-a"), two.generate(key_alias="resp-b")
    with two.client(alice) as a, two.client(bob, which=2) as b:
        first = a.responses.create(model="fake", input="remember this")
        assert a.responses.retrieve(first.id).id == first.id
        # Another key: the id names nothing it may see, on either API process.
        with pytest.raises(openai.NotFoundError):
            b.responses.retrieve(first.id)
        with pytest.raises(openai.BadRequestError) as refused:
            b.responses.create(model="fake", input="go on", previous_response_id=first.id)
        assert refused.value.code == "previous_response_not_found"
        with pytest.raises(openai.NotFoundError):
            b.responses.delete(first.id)
        # Its owner continues it and deletes it.
        second = a.responses.create(model="fake", input="go on", previous_response_id=first.id)
        assert second.status == "completed"
        a.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            a.responses.retrieve(first.id)
