"""Hot reload: `inferq reload`, SIGHUP and file changes reach every process; bad files do not."""

import json
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.support.fabric import MASTER_KEY, Fabric
from tests.support.fake_backend import Behaviour, FakeBackend
from tests.test_cli import cli

BASE = """
model_list:
  - model_name: fake
    litellm_params: {{model: openai/fake-model, api_base: "{api_base}", api_key: dummy}}
{extra}
router_settings:
  model_group_alias:
    chained: [{alias}]
general_settings:
  master_key: {key}
inferq_settings:
  key_prefix: {prefix}
  watch_config: {watch}
"""

NEW_GROUP = """  - model_name: fake2
    litellm_params: {{model: openai/other-model, api_base: "{api_base}", api_key: dummy}}
"""

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


def write(
    path: Path,
    backend: FakeBackend,
    prefix: str,
    *,
    extra: str = "",
    alias: str = "fake",
    watch: str = "false",
) -> None:
    extra = extra.format(api_base=backend.api_base)
    path.write_text(BASE.format(api_base=backend.api_base, key=MASTER_KEY, prefix=prefix,
                                extra=extra, alias=alias, watch=watch))  # fmt: skip


def ask(fabric: Fabric, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    return httpx.post(f"{fabric.base_url}/v1/chat/completions", json=body, headers=AUTH, timeout=10)


def served_by(fabric: Fabric, model: str, within: float = 10) -> str:
    """The group that answers `model`, once one does (a new group's worker needs a heartbeat)."""
    deadline = time.monotonic() + within
    while True:
        response = ask(fabric, model)
        if response.status_code == 200 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            return response.headers["x-inferq-model-group"]
        time.sleep(0.2)


def test_reload_adds_a_group_and_moves_an_alias_while_a_stream_runs(
    tmp_path: Path, redis_url: str, prefix: str, backend: FakeBackend
) -> None:
    config = tmp_path / "config.yaml"
    write(config, backend, prefix)
    fabric = Fabric(config, redis_url, tmp_path)
    try:
        fabric.start_worker()  # every group, including groups a reload adds
        fabric.start_api()
        assert served_by(fabric, "chained") == "fake"
        assert ask(fabric, "fake2").status_code == 400  # no such model, yet

        backend.behaviour = Behaviour(tokens=30, token_delay=0.05)  # a 1.5 s stream
        started = threading.Event()
        text: list[str] = []

        def stream() -> None:
            body = {"model": "fake", "stream": True, "messages": [{"role": "user", "content": "x"}]}
            url = f"{fabric.base_url}/v1/chat/completions"
            with httpx.stream("POST", url, json=body, headers=AUTH, timeout=20) as response:
                for line in response.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        for choice in json.loads(line[6:])["choices"]:
                            text.append(choice["delta"].get("content") or "")
                        started.set()
                    if line == "data: [DONE]":
                        text.append("[DONE]")

        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(10)
        write(config, backend, prefix, extra=NEW_GROUP, alias="fake2")
        result = cli(fabric, "reload")
        reader.join(20)

        assert result.returncode == 0, result.stdout + result.stderr
        applied = [line for line in result.stdout.splitlines() if line.startswith("applied")]
        assert len(applied) == 2  # the API and the worker
        assert all("groups added: fake2" in line and "aliases changed: chained" in line
                   for line in applied), result.stdout  # fmt: skip
        # The stream that was running throughout completed, whole.
        assert text[-1] == "[DONE]"
        assert "".join(text[:-1]) == "".join(f"w{i} " for i in range(30))

        backend.behaviour = Behaviour()
        assert served_by(fabric, "fake2") == "fake2"
        assert served_by(fabric, "chained") == "fake2"
        models = httpx.get(f"{fabric.base_url}/v1/models", headers=AUTH).json()
        assert {"fake", "fake2", "chained"} <= {m["id"] for m in models["data"]}
    finally:
        fabric.stop()


def test_an_invalid_config_is_refused_and_the_old_one_keeps_serving(
    tmp_path: Path, redis_url: str, prefix: str, backend: FakeBackend
) -> None:
    config = tmp_path / "config.yaml"
    write(config, backend, prefix, watch="true")
    fabric = Fabric(config, redis_url, tmp_path)
    try:
        fabric.start_worker()
        fabric.start_api()
        assert served_by(fabric, "chained") == "fake"

        # Saved with a mistake: both processes notice the change and refuse it, loudly.
        config.write_text(config.read_text().replace("model: openai/fake-model", "modle: x"))
        deadline = time.monotonic() + 10
        while not all("refused" in fabric.log(name) for name in ("api", "worker")):
            assert time.monotonic() < deadline, fabric.log("api") + fabric.log("worker")
            time.sleep(0.2)
        for name in ("api", "worker"):
            line = next(x for x in fabric.log(name).splitlines() if "refused" in x)
            assert "still serving the previous config" in line and "model_list[0]" in line
        assert served_by(fabric, "chained") == "fake"

        # `inferq reload` checks the file it is given before it asks anyone.
        local = cli(fabric, "reload")
        assert local.returncode == 2 and "model_list[0]" in local.stderr

        # An operator's valid copy with the same prefix asks; the processes reread their own
        # (still broken) file and say so.
        good = tmp_path / "operator.yaml"
        write(good, backend, prefix)
        asked = cli(Fabric(good, redis_url, tmp_path), "reload")
        assert asked.returncode == 1
        refused = [line for line in asked.stdout.splitlines() if line.startswith("REFUSED")]
        assert len(refused) == 2, asked.stdout
        assert served_by(fabric, "fake") == "fake"
    finally:
        fabric.stop()


def test_sighup_reloads_one_process(
    tmp_path: Path, redis_url: str, prefix: str, backend: FakeBackend
) -> None:
    config = tmp_path / "config.yaml"
    write(config, backend, prefix)
    fabric = Fabric(config, redis_url, tmp_path)
    try:
        fabric.start_worker()
        fabric.start_api()
        write(config, backend, prefix, extra=NEW_GROUP)
        fabric.procs["api"].send_signal(signal.SIGHUP)
        fabric.procs["worker"].send_signal(signal.SIGHUP)
        assert served_by(fabric, "fake2") == "fake2"
        assert "config reloaded (SIGHUP): groups added: fake2" in fabric.log("api")
        assert fabric.procs["api"].poll() is None
    finally:
        fabric.stop()
