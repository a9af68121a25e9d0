"""Backend-call CPU of the worker's HTTP client and SSE parser against maintained libraries.

`python -m bench.transports` (needs `pip install httpx-aiohttp httpx-sse`; neither is a
dependency) starts the fake backend on CPU 0 and, on CPU 1, sends the same requests through
`workers.transport.BackendHTTP` and through `httpx.AsyncClient` on httpx-aiohttp's transport
(what the `openai` SDK does), then parses the same 64-token streams with
`workers.providers.sse.SSEParser` and with httpx-sse, in alternating rounds; prints CPU
microseconds per request (process time of this process, so the backend's own CPU is not
counted).
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import httpx
import orjson

from bench.harness import CLIENT_CPU, FABRIC_CPU, pinned, wait_port
from inferq.cli.local import free_port
from inferq.workers.providers.sse import SSEParser
from inferq.workers.transport import BackendHTTP

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
STREAM = {**BODY, "max_tokens": 64, "stream": True}
HEADERS = {"content-type": "application/json", "accept": "application/json"}


def _library_transport() -> httpx.AsyncBaseTransport:
    from httpx_aiohttp import AiohttpTransport as LibraryTransport

    return LibraryTransport()  # type: ignore[no-any-return]


async def _cpu_per_call(call: Callable[[], Awaitable[None]], n: int, concurrency: int) -> float:
    """Process CPU µs per call of `call`, `concurrency` at a time."""
    remaining = [n]

    async def client() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            await call()

    before = time.process_time()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return (time.process_time() - before) / n * 1e6


async def _ours_sse(http: BackendHTTP, url: str) -> None:
    parser = SSEParser()
    words = 0
    async with http.stream(url, HEADERS, orjson.dumps(STREAM), read=30, backend="b") as answer:
        async for data in answer:
            for event in parser.feed(data):
                words += len(event.get("choices") or [])
    assert parser.done and words >= 64


async def _library_sse(http: httpx.AsyncClient, url: str) -> None:
    from httpx_sse import aconnect_sse

    words = 0
    async with aconnect_sse(http, "POST", url, json=STREAM, headers=HEADERS) as source:
        async for event in source.aiter_sse():
            if event.data == "[DONE]":
                break
            words += len(orjson.loads(event.data).get("choices") or [])
    assert words >= 64


async def run(url: str, rounds: int, n: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    body = orjson.dumps(BODY)
    for _ in range(rounds):
        async with (
            BackendHTTP() as ours,
            httpx.AsyncClient(transport=_library_transport(), timeout=30) as library,
        ):

            async def ours_post() -> None:
                answer = await ours.post(url, HEADERS, body, read=30, backend="b")
                assert answer.status == 200
                orjson.loads(answer.body)

            async def library_post() -> None:
                response = await library.post(url, content=body, headers=HEADERS)
                response.raise_for_status()
                orjson.loads(response.content)

            calls = (("ours (BackendHTTP)", ours_post), ("httpx on httpx-aiohttp", library_post))
            for name, post in calls:
                await _cpu_per_call(post, 100, 1)  # warm up
                for concurrency in (1, 32):
                    cpu = await _cpu_per_call(post, n, concurrency)
                    results.setdefault(f"{name}, non-stream, c={concurrency}", []).append(cpu)

            parsers = (
                ("ours: BackendHTTP + SSEParser", lambda: _ours_sse(ours, url)),
                ("httpx-aiohttp + httpx-sse", lambda: _library_sse(library, url)),
            )
            for name, stream in parsers:
                await _cpu_per_call(stream, 20, 1)
                cpu = await _cpu_per_call(stream, n // 4, 1)
                results.setdefault(f"{name}, 64-token stream, c=1", []).append(cpu)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    port = free_port()
    backend = subprocess.Popen(
        pinned(CLIENT_CPU, sys.executable, "-m", "tests.support.fake_backend", "--port", str(port)),
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(port, backend, "fake backend")
        os.sched_setaffinity(0, {int(FABRIC_CPU)})
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        try:
            import uvloop

            results = uvloop.run(run(url, args.rounds, args.requests))
        except ImportError:
            results = asyncio.run(run(url, args.rounds, args.requests))
    finally:
        backend.terminate()
        backend.wait(10)
    print(f"CPU µs per request in the calling process, median of {args.rounds} alternating rounds")
    for name, values in results.items():
        print(f"  {name:<54}{statistics.median(values):>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
