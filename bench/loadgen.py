"""A lean HTTP/1.1 load generator (raw asyncio + uvloop), so the client costs little CPU.

Prints one JSON line: latencies (ms) for non-stream requests, time to first content token (ms)
for streams, completed count and wall time (with `--samples`, every request's figures too). Usage:
  python -m bench.loadgen --url http://127.0.0.1:8001/v1/chat/completions --key sk-... \
      --concurrency 32 --duration 5 [--stream] [--tokens 64] [--requests N]
"""

import argparse
import asyncio
import json
import re
import sys
import time
from urllib.parse import urlparse

import orjson

_FIRST_TEXT = re.compile(rb'"content":"[^"]')


class Connection:
    """One keep-alive connection issuing requests one after another."""

    def __init__(self, host: str, port: int, path: str, headers: bytes) -> None:
        self.host, self.port, self.path, self.headers = host, port, path, headers
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, body: bytes, stream: bool) -> tuple[float, float]:
        """Send one request; return (ms to first content, ms to the end of the response)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        start = time.perf_counter()
        self.writer.write(
            b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n%s\r\n%s"
            % (self.path.encode(), self.host.encode(), len(body), self.headers, body)
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        first = 0.0
        if b"transfer-encoding: chunked" in lower:
            seen = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                if not first and _FIRST_TEXT.search(data):
                    first = time.perf_counter()
                seen = data
            if stream and b"[DONE]" not in seen:
                raise RuntimeError(f"stream ended without [DONE]: {seen[-200:]!r}")
        else:
            match = re.search(rb"content-length: *(\d+)", lower)
            length = int(match.group(1)) if match else 0
            data = await self.reader.readexactly(length)
            first = time.perf_counter()
        end = time.perf_counter()
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:300]!r}")
        return (first - start) * 1000, (end - start) * 1000


async def run(args: argparse.Namespace) -> dict[str, object]:
    url = urlparse(args.url)
    headers = b"authorization: Bearer %s\r\n" % args.key.encode() if args.key else b""
    payload = {
        "model": args.model,
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": args.tokens,
        "stream": args.stream,
        **json.loads(args.extra),
    }
    body = orjson.dumps(payload)
    firsts: list[float] = []
    totals: list[float] = []
    errors: list[str] = []
    remaining = [args.requests]
    deadline = 0.0  # set once warm

    async def client() -> None:
        conn = Connection(url.hostname or "127.0.0.1", url.port or 80, url.path, headers)
        while time.perf_counter() < deadline and remaining[0] > 0:
            remaining[0] -= 1
            try:
                async with asyncio.timeout(30):  # a benchmark never hangs on one request
                    first, total = await conn.request(body, args.stream)
            except Exception as exc:  # a benchmark reports failures, it does not stop at one
                errors.append(str(exc)[:200])
                conn.writer = None
                continue
            firsts.append(first)
            totals.append(total)

    # Warm up connections and caches before measuring.
    warm = Connection(url.hostname or "127.0.0.1", url.port or 80, url.path, headers)
    for _ in range(args.warmup):
        try:
            async with asyncio.timeout(30):
                await warm.request(body, args.stream)
        except Exception as exc:  # counted with the rest: a failed warm-up is a failure too
            errors.append(f"warm-up: {str(exc)[:200]}")
            warm.writer = None
    # The duration counts from here: a slow gateway's warm-up must not eat the measured time.
    started = time.perf_counter()
    deadline = started + args.duration
    await asyncio.gather(*(client() for _ in range(args.concurrency)))
    wall = time.perf_counter() - started
    return {
        "count": len(totals),
        "wall_s": wall,
        "first_p50": pct(firsts, 50),
        "first_p99": pct(firsts, 99),
        "total_p50": pct(totals, 50),
        "total_p99": pct(totals, 99),
        "errors": errors[:5],
        "error_count": len(errors),
        # Per-request figures for the latency plots, only when asked (they can be long).
        **({"firsts": firsts, "totals": totals} if args.samples else {}),
    }


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", default="")
    parser.add_argument("--model", default="bench")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=10**9)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--extra", default="{}", help="JSON merged into the request body")
    parser.add_argument("--samples", action="store_true", help="print every latency too")
    args = parser.parse_args()
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
