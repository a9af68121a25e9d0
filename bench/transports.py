"""Backend-call CPU of the worker's HTTP transport and SSE parser against maintained libraries.

`python -m bench.transports` (needs `pip install httpx-aiohttp httpx-sse`; neither is a
dependency) starts the fake backend on CPU 0 and, on CPU 1, sends the same requests through
`httpx.AsyncClient` on `workers.transport.AiohttpTransport` and on httpx-aiohttp's
transport, then parses the same 64-token streams with `workers.providers.sse.SSEParser` and
with httpx-sse, in alternating rounds; prints CPU microseconds per request (process time of
this process, so the backend's own CPU is not counted).
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
from inferq.workers.transport import AiohttpTransport

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
STREAM = {**BODY, "max_tokens": 64, "stream": True}


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


async def _ours_sse(http: httpx.AsyncClient, url: str) -> None:
    parser = SSEParser()
    words = 0
    async with http.stream("POST", url, json=STREAM) as response:
        async for data in response.aiter_raw():
            for event in parser.feed(data):
                words += len(event.get("choices") or [])
    assert parser.done and words >= 64


async def _library_sse(http: httpx.AsyncClient, url: str) -> None:
    from httpx_sse import aconnect_sse

    words = 0
    async with aconnect_sse(http, "POST", url, json=STREAM) as source:
        async for event in source.aiter_sse():
            if event.data == "[DONE]":
                break
            words += len(orjson.loads(event.data).get("choices") or [])
    assert words >= 64


async def run(url: str, rounds: int, n: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, make in (("ours", AiohttpTransport), ("httpx-aiohttp", _library_transport)):
            async with httpx.AsyncClient(transport=make(), timeout=30) as http:

                async def post(http: httpx.AsyncClient = http) -> None:
                    (await http.post(url, json=BODY)).raise_for_status()

                await _cpu_per_call(post, 100, 1)  # warm up
                for concurrency in (1, 32):
                    cpu = await _cpu_per_call(post, n, concurrency)
                    results.setdefault(f"{name} transport, non-stream, c={concurrency}", [])
                    results[f"{name} transport, non-stream, c={concurrency}"].append(cpu)
        async with httpx.AsyncClient(transport=AiohttpTransport(), timeout=30) as http:
            for name, parse in (("ours", _ours_sse), ("httpx-sse", _library_sse)):

                async def stream(http: httpx.AsyncClient = http, parse: object = parse) -> None:
                    await parse(http, url)  # type: ignore[operator]

                await _cpu_per_call(stream, 20, 1)
                cpu = await _cpu_per_call(stream, n // 4, 1)
                results.setdefault(f"{name} SSE parser, 64-token stream, c=1", []).append(cpu)
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
        print(f"  {name:<46}{statistics.median(values):>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
