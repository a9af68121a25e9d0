"""The dashboard at /ui: the master key to get in, and in headless Chromium the same numbers
as `/usage`, `/ui/data` and `inferq status --json`."""

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from inferq.broker.connection import connect
from inferq.broker.jobs.queue import enqueue
from inferq.broker.keys import Keys
from inferq.broker.messages import Job
from tests.support.fabric import MASTER_KEY, Fabric
from tests.support.fake_backend import FakeBackend

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOT = Path(__file__).resolve().parents[2] / "build" / "ui-dashboard.png"

CONFIG = """
model_list:
  - model_name: priced
    litellm_params:
      model: openai/fake-model
      api_base: {api_base}
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000002
      max_parallel_requests: 4
  - model_name: idle
    litellm_params:
      model: openai//models/x.gguf
      api_base: {api_base}
      max_parallel_requests: 1
router_settings:
  num_retries: 0
general_settings:
  master_key: {key}
  cache: true
inferq_settings:
  key_prefix: {prefix}
"""
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
T = TypeVar("T")


@pytest.fixture(scope="module")
def fabric(
    module_prefix: str, redis_url: str, fake: FakeBackend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fabric]:
    """A worker for `priced` only, five answers there (one from the cache), and a batch job
    waiting on `idle`, which no worker serves."""
    tmp = tmp_path_factory.mktemp("ui")
    config = tmp / "config.yaml"
    config.write_text(CONFIG.format(api_base=fake.api_base, key=MASTER_KEY, prefix=module_prefix))
    fab = Fabric(config, redis_url, tmp)
    try:
        fab.start_worker("worker", "--group", "priced")
        fab.start_api()
        for i, stream in enumerate([False, False, True, False]):
            question = f"dashboard question {i} {time.time_ns()}"
            resp = chat(fab, question, max_tokens=3 + i, stream=stream)
            assert resp.status_code == 200, resp.text
            if i == 0:
                again = chat(fab, question, max_tokens=3)
                assert again.headers["x-inferq-cache"] == "hit"
        asyncio.run(_submit_batch_job(redis_url, module_prefix, "idle"))
        yield fab
    finally:
        fab.stop()


def chat(fabric: Fabric, content: str, max_tokens: int, stream: bool = False) -> httpx.Response:
    body = {
        "model": "priced",
        "max_tokens": max_tokens,
        "stream": stream,
        "messages": [{"role": "user", "content": content}],
    }
    return httpx.post(fabric.base_url + "/v1/chat/completions", json=body, headers=AUTH, timeout=30)


async def _submit_batch_job(redis_url: str, prefix: str, group: str) -> None:
    redis = connect(redis_url, max_connections=2)
    now = time.time()
    body = {"messages": [{"role": "user", "content": "later"}]}
    job = Job(
        id=f"batch-{time.time_ns()}", model=group, group=group, body=body, created=now,
        deadline=now + 600,
    )  # fmt: skip
    try:
        await enqueue(redis, Keys(prefix), job)
    finally:
        await redis.aclose()


def test_the_dashboard_needs_the_master_key(fabric: Fabric) -> None:
    base = fabric.base_url
    data = httpx.get(base + "/ui/data")
    assert data.status_code == 401
    assert data.json()["error"]["type"] == "authentication_error"
    assert data.json()["error"]["code"] == "invalid_api_key"

    page = httpx.get(base + "/ui")
    assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
    assert 'name="master_key"' in page.text and 'action="/ui/login"' in page.text

    wrong = httpx.post(base + "/ui/login", data={"master_key": "sk-not-it"})
    assert (
        wrong.status_code == 401
        and "That is neither the master key nor an admin key." in wrong.text
    )
    assert "set-cookie" not in wrong.headers

    right = httpx.post(base + "/ui/login", data={"master_key": MASTER_KEY})
    assert right.status_code == 303 and right.headers["location"] == "/ui"
    cookie = right.headers["set-cookie"]
    assert MASTER_KEY not in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    value = right.cookies["inferq_ui"]
    jar = {"Cookie": f"inferq_ui={value}"}
    assert httpx.get(base + "/ui", headers=jar).status_code == 200
    assert httpx.get(base + "/ui/data", headers=jar).status_code == 200
    assert MASTER_KEY not in httpx.get(base + "/ui/data", headers=jar).text
    # The cookie opens the dashboard only, not the API; a forged one opens nothing.
    assert httpx.get(base + "/usage", headers=jar).status_code == 401
    assert httpx.get(base + "/v1/models", headers=jar).status_code == 401
    forged = {"Cookie": f"inferq_ui={value.split('.')[0]}.{'0' * 64}"}
    assert httpx.get(base + "/ui/data", headers=forged).status_code == 401
    # The Bearer header works for scripts, as everywhere else.
    assert httpx.get(base + "/ui/data", headers=AUTH).status_code == 200
    assert MASTER_KEY not in fabric.log("api")


def test_the_dashboard_shows_what_the_api_reports(fabric: Fabric, tmp_path: Path) -> None:
    sync_playwright, expect = _browser_or_skip()
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1360, "height": 900},
        )
        try:
            page = browser.new_page()
            first = page.goto(fabric.base_url + "/ui")
            assert first is not None and first.status == 401
            expect(page.get_by_label("Master key")).to_be_visible()
            expect(page.get_by_test_id("login-error")).to_be_hidden()

            page.get_by_label("Master key").fill("sk-wrong")
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_test_id("login-error")).to_have_text(
                "That is neither the master key nor an admin key."
            )

            page.get_by_label("Master key").fill(MASTER_KEY)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_function("() => Number(document.body.dataset.updates) >= 1")
            assert page.get_by_test_id("state").inner_text() == "live"
            assert MASTER_KEY not in page.content()
            assert all(MASTER_KEY not in c.get("value", "") for c in browser.cookies())

            shown = _eventually(lambda: _matches_the_api(page, fabric))
            assert shown["usage"]["requests"] == 5 and shown["usage"]["cache_hits"] == 1
            assert shown["groups"]["idle"]["waiting"] == 1
            page.wait_for_timeout(2500)  # one more poll: the page keeps itself up to date
            assert page.evaluate("() => Number(document.body.dataset.updates)") >= 2
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            page.get_by_test_id("logout").click()
            expect(page.get_by_label("Master key")).to_be_visible()
            assert httpx.get(fabric.base_url + "/ui/data").status_code == 401
        finally:
            browser.close()


def _matches_the_api(page: Any, fabric: Fabric) -> dict[str, Any]:
    """What the page shows, asserted equal to what /usage, /ui/data and `inferq status`
    report now."""
    usage = httpx.get(fabric.base_url + "/usage", headers=AUTH).json()
    data = httpx.get(fabric.base_url + "/ui/data", headers=AUTH).json()
    status = json.loads(_cli(fabric, "status", "--json"))
    shown = _read_page(page)

    priced = usage["by_group"]["priced"]
    assert shown["usage"] == {
        "requests": priced["requests"],
        "cache_hits": priced["cache_hits"],
        "errors": priced["errors"],
        "prompt_tokens": priced["prompt_tokens"],
        "completion_tokens": priced["completion_tokens"],
        "cost": pytest.approx(priced["cost"], abs=1e-6),
    }
    assert shown["totals"] == {
        "requests": usage["totals"]["requests"],
        "cache_hits": usage["totals"]["cache_hits"],
        "tokens": usage["totals"]["prompt_tokens"] + usage["totals"]["completion_tokens"],
        "cost": pytest.approx(usage["totals"]["cost"], abs=1e-6),
        "workers": len(data["workers"]),
        "waiting": sum(g["waiting"] for g in status["groups"].values()),
        "rpm": data["requests_per_min"],
    }
    for name in ("priced", "idle"):
        for field in ("waiting", "running", "workers", "slots"):
            assert shown["groups"][name][field] == status["groups"][name][field], (name, field)
            assert shown["groups"][name][field] == data["groups"][name][field], (name, field)
    for dep in ("priced.0", "idle.0"):
        assert shown["deployments"][dep] == {
            k: data["deployments"][dep][k] for k in ("workers", "slots", "in_flight")
        }
    return shown


def _read_page(page: Any) -> dict[str, Any]:
    def number(selector: str) -> float:
        text = page.locator(selector).first.inner_text()
        return float(text.replace(",", "").replace("$", ""))

    def fields(row: str, names: tuple[str, ...]) -> dict[str, float]:
        return {n: number(f'[data-testid="{row}"] [data-field="{n}"]') for n in names}

    group_fields = ("waiting", "running", "workers", "slots")
    return {
        "usage": fields(
            "usage-priced",
            ("requests", "cache_hits", "errors", "prompt_tokens", "completion_tokens", "cost"),
        ),
        "totals": {
            "requests": number('[data-testid="total-requests"]'),
            "cache_hits": number('[data-testid="total-cache-hits"]'),
            "tokens": number('[data-testid="total-tokens"]'),
            "cost": number('[data-testid="total-cost"]'),
            "workers": number('[data-testid="total-workers"]'),
            "waiting": number('[data-testid="total-waiting"]'),
            "rpm": number('[data-testid="total-rpm"]'),
        },
        "groups": {g: fields(f"group-{g}", group_fields) for g in ("priced", "idle")},
        "deployments": {
            d: fields(f"deployment-{d}", ("workers", "slots", "in_flight"))
            for d in ("priced.0", "idle.0")
        },
    }


def _eventually(check: Callable[[], T], timeout: float = 15.0) -> T:
    """`check()` once it passes: the page polls every two seconds and workers heartbeat every
    two, so a moment may pass before page and API agree."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _cli(fabric: Fabric, *args: str) -> str:
    env = {**os.environ, "REDIS_URL": fabric.redis_url}
    return subprocess.run(
        [sys.executable, "-m", "inferq.cli", *args, "--config", str(fabric.config)],
        capture_output=True, text=True, env=env, check=True, timeout=30,
    ).stdout  # fmt: skip


def _browser_or_skip() -> tuple[Any, Any]:
    """playwright's `sync_playwright` and `expect`, or a skip (a failure under
    INFERQ_REQUIRE_BROWSER=1) saying what is missing."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        missing = "the playwright package is not installed (pip install -e '.[dev]')"
    else:
        if Path(CHROMIUM).exists():
            return sync_playwright, expect
        missing = f"{CHROMIUM} is missing (apt-get install chromium, or `make test`)"
    if os.environ.get("INFERQ_REQUIRE_BROWSER") == "1":
        pytest.fail(f"INFERQ_REQUIRE_BROWSER=1 but {missing}")
    pytest.skip(f"no browser: {missing}")
