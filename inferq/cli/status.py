"""`inferq status` and `inferq check-health`: the fabric as an operator sees it."""

import asyncio
import json
import sys
import time
from typing import Any

import httpx

from inferq.broker.connection import connect, ping
from inferq.broker.errors import BrokerError
from inferq.broker.keys import Keys
from inferq.broker.ops.registry import live_workers
from inferq.broker.ops.status import read_status
from inferq.broker.tenants import vkeys
from inferq.broker.tenants.shares import read_shares
from inferq.config import GatewayConfig


async def collect(config: GatewayConfig, redis_url: str) -> dict[str, Any]:
    """Per group: queue, workers, slots, in flight, last minute's throughput and latency,
    cooldowns (raises BrokerError when Redis is down)."""
    redis = connect(redis_url, max_connections=4)
    groups = {name: [d.id for d in deps] for name, deps in config.groups.items()}
    keys = Keys(config.fabric.key_prefix)
    try:
        status = await read_status(redis, keys, groups)
        shares = await read_shares(redis, keys)
        aliases = {r.key_id: r.key_alias or "" for r in await vkeys.load_all(redis, keys)}
    finally:
        await redis.aclose()
    result = status.as_dict({name: config.unavailable_reason(name) for name in config.groups})
    result["keys"] = {
        group: {
            key_id: {
                "alias": aliases.get(key_id, ""),
                "in_flight": flight,
                "waiting": waiting,
                "batch": batch,
            }
            for key_id, (flight, waiting, batch) in per_key.items()
        }
        for group, per_key in shares.items()
    }
    return result


def render(status: dict[str, Any]) -> str:
    """The status as a fixed-width table."""
    head = (
        f"{'group':<22}{'waiting':>8}{'lag s':>7}{'running':>8}{'batch':>8}{'workers':>8}"
        f"{'slots':>6}{'busy':>6}{'req/min':>8}{'p50 ms':>8}  notes"
    )
    lines = [head, "-" * len(head)]
    for name, g in status["groups"].items():
        notes = []
        if g["unavailable"]:
            notes.append(f"unavailable: {g['unavailable']}")
        elif not g["workers"]:
            notes.append("no live worker")
        notes += [f"{d} cooling {s}s" for d, s in g["cooldowns"].items()]
        p50 = "-" if g["p50_ms"] is None else f"{g['p50_ms']:.0f}"
        batch = f"{g['batch_waiting']}+{g['batch_running']}"
        lag = "-" if g["lag_s"] is None else f"{g['lag_s']:.1f}"
        lines.append(
            f"{name:<22}{g['waiting']:>8}{lag:>7}{g['running']:>8}{batch:>8}{g['workers']:>8}"
            f"{g['slots']:>6}{g['in_flight']:>6}{g['requests_per_min']:>8}{p50:>8}"
            f"  {'; '.join(notes)}"
        )
    return "\n".join(lines + _per_key(status.get("keys", {})))


def _per_key(per_group: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """The queue per virtual key: jobs queued or running, and requests held back by its share."""
    if not any(per_group.values()):
        return []
    head = f"{'group':<22}{'key':<14}{'alias':<20}{'in flight':>10}{'waiting':>9}{'batch':>7}"
    lines = ["", "queue per key", head, "-" * len(head)]
    for group, per_key in sorted(per_group.items()):
        for key_id, k in sorted(per_key.items(), key=lambda kv: -kv[1]["waiting"]):
            lines.append(
                f"{group:<22}{key_id:<14}{k['alias'][:19]:<20}{k['in_flight']:>10}{k['waiting']:>9}"
                f"{k['batch']:>7}"
            )
    return lines


def show_status(config: GatewayConfig, redis_url: str, *, as_json: bool, watch: bool) -> int:
    """Print the status once, or every two seconds with `watch`; 1 when Redis is down."""
    while True:
        try:
            status = asyncio.run(collect(config, redis_url))
        except BrokerError as exc:
            print(f"inferq status: {exc}", file=sys.stderr)
            return 1
        text = json.dumps(status, indent=2) if as_json else render(status)
        if watch:
            print(
                "\033[2J\033[H" + time.strftime("%H:%M:%S ") + "(Ctrl-C stops)\n" + text, flush=True
            )
            try:
                time.sleep(2)
            except KeyboardInterrupt:
                return 0
        else:
            print(text)
            return 0


def check_health(
    config: GatewayConfig, redis_url: str, *, groups: list[str], api: str | None
) -> int:
    """0 when Redis answers, every group in `groups` has a live worker and `api` is ready."""
    problem = asyncio.run(_problem(config, redis_url, groups))
    if problem is None and api:
        try:
            ready = httpx.get(api.rstrip("/") + "/health/readiness", timeout=3).status_code == 200
        except httpx.HTTPError as exc:
            ready, problem = False, f"API at {api} unreachable ({type(exc).__name__})"
        if not ready and problem is None:
            problem = f"API at {api} is not ready"
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print("healthy")
    return 0


async def _problem(config: GatewayConfig, redis_url: str, groups: list[str]) -> str | None:
    redis = connect(redis_url, max_connections=2)
    try:
        if not await ping(redis):
            return "Redis is unreachable"
        unknown = [g for g in groups if g not in config.groups]
        if unknown:
            return f"no model group {', '.join(unknown)}"
        alive = {w.group for w in await live_workers(redis, Keys(config.fabric.key_prefix))}
        missing = [g for g in groups if g not in alive]
        return f"no live worker for {', '.join(missing)}" if missing else None
    except BrokerError as exc:
        return str(exc)
    finally:
        await redis.aclose()
