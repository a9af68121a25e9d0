"""`make bench`: 10,000 concurrent SSE streams through one API process and one worker.

The fake backend takes 4 s to each stream's first word (a slow model), so every stream is open
at once. Each stream must arrive whole and in order (`w0 w1 ... w15`, then `[DONE]`); the
API process's resident memory is sampled throughout. Loopback only; the open-file limit is
raised to its hard limit for this process and the ones it starts.
"""

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.harness import CLIENT_CPU, FABRIC_CPU, KEY, gateway_config, pinned, wait_port
from inferq.cli.local import EmbeddedRedis, free_port

RSS_LIMIT_MB = 1024


def raise_open_files(wanted: int) -> int:
    """Raise this process's soft limit on open files towards the hard one; the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else min(hard, max(soft, wanted))
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid`, MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def one_stream(port: int, body: bytes, expected: str) -> str | None:
    """One streamed request; None when it arrived whole and in order, else what was wrong."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            b"content-type: application/json\r\nauthorization: Bearer %s\r\n"
            b"content-length: %d\r\n\r\n%s" % (KEY.encode(), len(body), body)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            body_start = await reader.read(300)
            return f"{head.split(b' ', 2)[1].decode()} {body_start.decode(errors='replace')}"
        raw = bytearray()
        while True:  # chunked transfer encoding
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            raw += await reader.readexactly(size + 2)
            if size == 0:
                break
    finally:
        writer.close()
    text, done = [], False
    for line in bytes(raw).split(b"\n"):
        if not line.startswith(b"data: "):
            continue  # SSE comments (pings), blank lines, chunk-size trailers
        data = line[6:].strip()
        if data == b"[DONE]":
            done = True
            continue
        for choice in orjson.loads(data).get("choices") or []:
            text.append((choice.get("delta") or {}).get("content") or "")
    got = "".join(text)
    if not done:
        return "no [DONE]"
    return None if got == expected else f"garbled: {got[:60]!r}"


async def load(port: int, streams: int, tokens: int, api_pid: int) -> dict[str, float]:
    """Open `streams` streams (1,000 every 0.2 s), wait for all; counts and peak RSS."""
    body = orjson.dumps({
        "model": "bench",
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": tokens,
        "stream": True,
        "cache": {"no-cache": True, "no-store": True},
    })  # fmt: skip
    expected = "".join(f"w{i} " for i in range(tokens))
    peak = rss_mb(api_pid)
    started = time.monotonic()

    async def guarded() -> str | None:
        try:
            return await one_stream(port, body, expected)
        except Exception as exc:  # a benchmark counts failures, it does not stop at one
            return f"{type(exc).__name__}: {exc}"[:120]

    tasks = []
    for i in range(0, streams, 1000):
        tasks += [asyncio.create_task(guarded()) for _ in range(min(1000, streams - i))]
        await asyncio.sleep(0.2)
    pending = set(tasks)
    most = 0  # streams open at once (started, not ended)
    while pending:
        most = max(most, len(pending))
        _, pending = await asyncio.wait(pending, timeout=0.5)
        peak = max(peak, rss_mb(api_pid))
    problems = [r for r in (t.result() for t in tasks) if r is not None]
    for problem in sorted(set(problems))[:5]:
        print(f"  !! {problems.count(problem)} x {problem}", flush=True)
    return {
        "streams": streams,
        "complete": streams - len(problems),
        "most_open": most,
        "seconds": time.monotonic() - started,
        "peak_rss_mb": peak,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--first-token-delay", type=float, default=4.0)
    args = parser.parse_args()
    files = raise_open_files(args.streams * 2 + 1000)
    if files < args.streams + 1000:
        print(f"open-file limit {files} is too low for {args.streams} streams", flush=True)
        return 1
    procs: list[subprocess.Popen[bytes]] = []
    redis = EmbeddedRedis(cpus=FABRIC_CPU).start()
    workdir = tempfile.TemporaryDirectory(prefix="inferq-streams-")
    try:
        backend_port, api_port = free_port(), free_port()
        config = Path(workdir.name) / "streams.yaml"
        config.write_text(gateway_config(backend_port, slots=args.streams, prefix="streams"))
        env = {**os.environ, "REDIS_URL": redis.url, "INFERQ_LOG_LEVEL": "WARNING"}
        backend = subprocess.Popen(
            pinned(CLIENT_CPU, sys.executable, "-m", "tests.support.fake_backend",
                   "--port", str(backend_port),
                   "--first-token-delay", str(args.first_token_delay)),
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(backend)
        wait_port(backend_port, backend, "fake backend")
        cli = (sys.executable, "-m", "inferq.cli")
        worker = subprocess.Popen(
            pinned(FABRIC_CPU, *cli, "worker", "--config", str(config)), env=env
        )
        api = subprocess.Popen(
            pinned(FABRIC_CPU, *cli, "api", "--config", str(config), "--port", str(api_port)),
            env=env,
        )
        procs += [worker, api]
        wait_port(api_port, api, "inferq api")
        time.sleep(1.0)
        idle = rss_mb(api.pid)
        print(f"{args.streams} concurrent streams, first word after "
              f"{args.first_token_delay:g} s ...", flush=True)  # fmt: skip
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
        result = asyncio.run(load(api_port, args.streams, args.tokens, api.pid))
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        redis.stop()
        workdir.cleanup()
    ok = result["complete"] == args.streams and result["peak_rss_mb"] <= RSS_LIMIT_MB
    print()
    print(f"streams complete and in order   {int(result['complete'])} of {args.streams}")
    print(f"streams open at once, at most   {int(result['most_open'])}")
    print(f"wall time (s)                   {result['seconds']:.1f}")
    print(f"API process RSS idle (MB)       {idle:.0f}")
    print(f"API process RSS peak (MB)       {result['peak_rss_mb']:.0f}   "
          f"target <= {RSS_LIMIT_MB}: {'OK' if ok else 'MISSED'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
