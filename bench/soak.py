"""`make soak`: 2,000 requests, streamed and not, through several deployments while a random
fault schedule breaks backends, kills and stops workers and restarts Redis. Every request must
end complete or with a clear error: none lost, none duplicated or garbled.

Everything runs on 127.0.0.1: an embedded Redis, fake backends, `inferq api` and two
`inferq worker` processes. Usage: python -m bench.soak [--requests 2000] [--seed 1]
[--schedule mixed|kill-heavy]: `kill-heavy` is mostly SIGKILLs of workers, which land at random
moments of the streams in flight (before the first token, between tokens, after the last one,
after the backend's finish), so a reclaimed stream must end with each token once.
"""

import argparse
import asyncio
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from inferq.cli.local import EmbeddedRedis, free_port, port_open
from tests.support.fake_backend import BackendThread, FakeBackend

KEY = "sk-soak"
# The faults each schedule draws from (a kind listed twice is drawn twice as often).
SCHEDULES = {
    "mixed": ["500", "429", "drop", "hang", "sigkill", "sigterm", "500", "drop", "redis"],
    "kill-heavy": ["sigkill"] * 7 + ["sigterm", "500", "drop"],
}
WORDS = re.compile(r"^(w\d+ )*$")

CONFIG = """
model_list:
{deployments}
router_settings:
  num_retries: 2
  allowed_fails: 3
  cooldown_time: 2
  model_group_alias:
    soak: [g, backup]
general_settings:
  master_key: {key}
inferq_settings:
  key_prefix: soak
"""


@dataclass
class Tally:
    """What the clients saw."""

    submitted: int = 0
    completed: int = 0
    failed_clearly: int = 0
    lost: int = 0
    garbled: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def error(self, kind: str) -> None:
        self.failed_clearly += 1
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def bad(self, what: str, detail: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(f"{what}: {detail[:300]}")


class Fabric:
    """The processes under test."""

    def __init__(self, workdir: Path, backends: list[FakeBackend]) -> None:
        self.redis = EmbeddedRedis().start()
        self.port = free_port()
        entries = []
        for i, b in enumerate(backends):
            group = "backup" if i == len(backends) - 1 else "g"
            entries.append(
                f"  - model_name: {group}\n    litellm_params:\n      model: openai/fake\n"
                f"      api_base: {b.api_base}\n      max_parallel_requests: 8\n"
                f"    model_info: {{id: d{i}}}"
            )
        self.config = workdir / "soak.yaml"
        self.config.write_text(CONFIG.format(deployments="\n".join(entries), key=KEY))
        self.log = (workdir / "soak.log").open("ab")
        self.env = {**os.environ, "REDIS_URL": self.redis.url, "INFERQ_LOG_LEVEL": "WARNING"}
        self.api = self._spawn("api", "--port", str(self.port))
        self.workers = [self._spawn("worker"), self._spawn("worker")]
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", self.port):
            if time.monotonic() > deadline:
                raise SystemExit("inferq api did not start")
            time.sleep(0.1)
        time.sleep(1.5)  # workers register

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable,
            "-m",
            "inferq.cli",
            *args[:1],
            "--config",
            str(self.config),
            *args[1:],
        ]
        return subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=self.log)

    def replace_worker(self, how: signal.Signals) -> None:
        victim = self.workers.pop(0)
        victim.send_signal(how)
        if how is signal.SIGTERM:
            victim.wait(40)
        self.workers.append(self._spawn("worker"))

    def stop(self) -> None:
        for proc in [self.api, *self.workers]:
            proc.terminate()
        for proc in [self.api, *self.workers]:
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.redis.stop()
        self.log.close()


async def one_request(http: httpx.AsyncClient, url: str, i: int, tally: Tally) -> None:
    stream = i % 2 == 0
    tokens = 8 + i % 9
    body = {
        "model": "soak",
        "messages": [{"role": "user", "content": f"request {i}"}],
        "max_tokens": tokens,
        "stream": stream,
    }
    expected = "".join(f"w{n} " for n in range(tokens))
    started = time.perf_counter()
    tally.submitted += 1
    try:
        if stream:
            await _stream(http, url, body, expected, tally)
        else:
            resp = await http.post(url, json=body)
            if resp.status_code == 200:
                content = resp.json()["choices"][0]["message"]["content"]
                if content == expected:
                    tally.completed += 1
                else:
                    tally.garbled += 1
                    tally.bad("garbled", content)
            elif "error" in resp.json():
                tally.error(f"HTTP {resp.status_code}: {_reason(resp.json())}")
            else:
                tally.lost += 1
                tally.bad("no error body", resp.text)
    except (httpx.TimeoutException, httpx.TransportError) as exc:
        tally.lost += 1
        tally.bad("lost", repr(exc))
        return
    tally.latencies.append(time.perf_counter() - started)


async def _stream(
    http: httpx.AsyncClient, url: str, body: dict[str, object], expected: str, tally: Tally
) -> None:
    async with http.stream("POST", url, json=body) as resp:
        if resp.status_code != 200:
            await resp.aread()
            if "error" in resp.json():
                tally.error(f"HTTP {resp.status_code}: {_reason(resp.json())}")
            else:
                tally.lost += 1
            return
        text, finish, done, error = "", None, False, None
        async for line in resp.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            event = orjson.loads(line[6:])
            if "error" in event:
                error = event["error"]
                continue
            for choice in event.get("choices", []):
                text += choice.get("delta", {}).get("content") or ""
                finish = choice.get("finish_reason") or finish
    if error is not None:
        tally.error(f"SSE error event: {_reason({'error': error})}")
    elif not done or finish is None:
        tally.lost += 1
        tally.bad("stream just stopped", text)
    elif _coherent(text, expected):
        tally.completed += 1  # the answer, possibly carried on by another deployment
    else:
        tally.garbled += 1
        tally.bad("garbled stream", text)


def _coherent(text: str, expected: str) -> bool:
    """The expected number of words, in runs `w0 w1 ...`: a stream carried on elsewhere after a
    failure restarts the fake's count but never repeats, drops or reorders within a run, and the
    new deployment is asked only for the tokens still due."""
    if not WORDS.match(text):
        return False
    words = text.split()
    if len(words) != len(expected.split()):
        return False
    runs: list[list[str]] = []
    for word in words:
        if word == "w0" or not runs:
            runs.append([])
        runs[-1].append(word)
    return all(run == [f"w{i}" for i in range(len(run))] for run in runs)


def _reason(body: dict[str, object]) -> str:
    """The first words of an OpenAI error message, to group failures by cause."""
    error = body.get("error")
    message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
    return " ".join(message.split()[:5])


async def faults(
    fabric: Fabric,
    backends: list[FakeBackend],
    rng: random.Random,
    stop: asyncio.Event,
    kinds: list[str],
) -> list[str]:
    """Break something of `kinds` every 0.5-1.5 s until `stop`."""
    done: list[str] = []
    redis_restarted = False
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        b = rng.choice(backends[:-1])  # the backup stays healthy so fallbacks can succeed
        kind = rng.choice(kinds)
        if kind == "redis" and redis_restarted:
            kind = "sigkill"
        calls = len(b.requests)
        if kind == "500":
            b.behaviour.status, b.behaviour.fail_first = 500, calls + 3
        elif kind == "429":
            b.behaviour.status, b.behaviour.fail_first, b.behaviour.retry_after = (
                429,
                calls + 2,
                "1",
            )
        elif kind == "drop":
            b.behaviour.drop_after = 2
            await asyncio.sleep(0.3)
            b.behaviour.drop_after = None
        elif kind == "hang":
            b.behaviour.hang_first = calls + 1
        elif kind == "sigkill":
            await asyncio.to_thread(fabric.replace_worker, signal.SIGKILL)
        elif kind == "sigterm":
            await asyncio.to_thread(fabric.replace_worker, signal.SIGTERM)
        else:
            redis_restarted = True
            await asyncio.to_thread(fabric.redis.stop)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(fabric.redis.start)
        done.append(kind)
    return done


async def soak(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    threads = [BackendThread() for _ in range(4)]
    backends = [t.start() for t in threads]
    for b in backends:
        b.behaviour.token_delay = 0.002
        b.requests = _Counter()  # type: ignore[assignment]
    workdir = Path(tempfile.mkdtemp(prefix="inferq-soak-"))
    fabric = Fabric(workdir, backends)
    tally = Tally()
    url = f"http://127.0.0.1:{fabric.port}/v1/chat/completions"
    stop = asyncio.Event()
    started = time.monotonic()
    try:
        limits = httpx.Limits(max_connections=args.concurrency)
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(timeout=90, limits=limits, headers=headers) as http:
            kinds = SCHEDULES[args.schedule]
            breaker = asyncio.create_task(faults(fabric, backends, rng, stop, kinds))
            queue = iter(range(args.requests))

            async def client() -> None:
                for i in queue:
                    await one_request(http, url, i, tally)

            await asyncio.gather(*(client() for _ in range(args.concurrency)))
            stop.set()
            schedule = await breaker
    finally:
        fabric.stop()
        for t in threads:
            t.stop()
    print(f"schedule {args.schedule}, seed {args.seed}")
    report(tally, schedule, time.monotonic() - started, workdir / "soak.log")
    if tally.lost == 0 and tally.garbled == 0:
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    # Keep what the processes logged: a lost or garbled request is the thing to look into.
    print(f"processes' log kept: {workdir / 'soak.log'}")
    return 1


class _Counter(list):  # type: ignore[type-arg]
    """Counts requests without keeping their bodies."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def append(self, _item: object) -> None:
        self.n += 1

    def __len__(self) -> int:
        return self.n


def report(t: Tally, schedule: list[str], wall: float, log: Path) -> None:
    lat = sorted(t.latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, round(p / 100 * (len(lat) - 1)))] * 1000 if lat else 0.0

    counts = {k: schedule.count(k) for k in sorted(set(schedule))}
    print(f"faults injected ({len(schedule)}): {counts}")
    print(f"submitted               {t.submitted}")
    print(f"completed               {t.completed}")
    print(f"failed with clear error {t.failed_clearly}")
    for reason, n in sorted(t.errors.items(), key=lambda kv: -kv[1]):
        print(f"  {n:5d}  {reason}")
    print(f"lost                    {t.lost}")
    print(f"duplicated or garbled   {t.garbled}")
    print(f"latency p50 / p99       {pct(50):.0f} ms / {pct(99):.0f} ms")
    print(f"wall time               {wall:.1f} s")
    for example in t.examples:
        print(f"  example: {example}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default="mixed")
    return asyncio.run(soak(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
