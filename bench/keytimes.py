"""Keys off and on, interleaved request by request: one keep-alive connection per key, the keys
taking turns (each first in turn), so load that comes and goes on a shared machine lands on
all of them alike. Prints one JSON line: each key's p50 (ms) and, for every key after the
first, the median of its per-turn difference from the first key. Usage:
  python -m bench.keytimes --url http://127.0.0.1:8001/v1/chat/completions --n 1500 \
      --key off=sk-master --key on=sk-virtual
"""

import argparse
import asyncio
import json
import statistics
from urllib.parse import urlparse

import orjson

from bench.loadgen import Connection


async def run(url: str, keys: dict[str, str], n: int, body: bytes) -> dict[str, float]:
    """`n` turns of one request per key; p50 per key and median per-turn differences."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    conns = {
        name: Connection(host, port, parsed.path, b"authorization: Bearer %s\r\n" % key.encode())
        for name, key in keys.items()
    }
    names = list(keys)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm up: connections open, keys cached in the API
        for _ in range(20):
            await conns[name].request(body, False)
    for i in range(n):
        turn = names[i % len(names) :] + names[: i % len(names)]
        for name in turn:
            times[name].append((await conns[name].request(body, False))[1])
    out = {f"p50 {name}": statistics.median(v) for name, v in times.items()}
    for name in names[1:]:
        diffs = [a - b for a, b in zip(times[name], times[names[0]], strict=True)]
        out[f"added {name}"] = statistics.median(diffs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", action="append", required=True, help="NAME=KEY, in order")
    parser.add_argument("--n", type=int, default=1500, help="turns")
    parser.add_argument("--extra", default="{}", help="JSON merged into the body")
    args = parser.parse_args()
    keys = dict(k.split("=", 1) for k in args.key)
    payload = {
        "model": "bench",
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": 16,
        **json.loads(args.extra),
    }
    print(json.dumps(asyncio.run(run(args.url, keys, args.n, orjson.dumps(payload)))))


if __name__ == "__main__":
    main()
