"""Redis restarted under load (the test's own server): every request ends, clearly; the fabric
reconnects by itself."""

import threading
import time
from collections.abc import Callable

import httpx

from inferq.cli.local import EmbeddedRedis
from tests.faults.conftest import AUTH, deployment, models, settings
from tests.support.fabric import Fabric
from tests.support.fake_backend import FakeBackend


def test_restart_under_load_loses_no_request(
    backends: Callable[[], FakeBackend], fabric_for: Callable[..., Fabric]
) -> None:
    backend = backends()
    backend.behaviour.token_delay = 0.005
    redis = EmbeddedRedis().start()
    try:
        fabric = fabric_for(models(deployment("g", backend.api_base)) + settings(), redis=redis.url)
        fabric.start_worker()
        fabric.start_api()
        outcomes: list[tuple[int, str]] = []
        stop = threading.Event()

        def client(stream: bool) -> None:
            with httpx.Client(timeout=30) as http:
                while not stop.is_set():
                    body = {
                        "model": "g",
                        "messages": [{"role": "user", "content": "hi"}],
                        "max_tokens": 8,
                        "stream": stream,
                    }
                    resp = http.post(
                        fabric.base_url + "/v1/chat/completions", json=body, headers=AUTH
                    )
                    outcomes.append((resp.status_code, resp.text))

        clients = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(6)]
        for t in clients:
            t.start()
        time.sleep(1.0)
        redis.stop()
        time.sleep(0.5)
        redis.start()
        time.sleep(3.0)
        stop.set()
        for t in clients:
            t.join(35)
        assert not any(t.is_alive() for t in clients), "a request hung"
        words = "".join(f"w{i} " for i in range(8))
        for status, text in outcomes:
            if status == 200 and text.startswith("{"):
                assert words in text
            elif status == 200:  # a stream: either complete, or ended by an error event
                assert text.rstrip().endswith("data: [DONE]") or '"error"' in text
            else:
                assert status in (502, 503, 504), (status, text)
                assert '"error"' in text
        assert sum(1 for s, _ in outcomes if s == 200) > 20
        # After the restart, with no process restarted, everything works again.
        resp = httpx.post(
            fabric.base_url + "/v1/chat/completions",
            json={"model": "g", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            headers=AUTH,
            timeout=15,
        )
        assert resp.status_code == 200
    finally:
        redis.stop()
