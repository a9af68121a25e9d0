"""`inferq keys create|list|info|revoke`: virtual keys for operators, straight in Redis.

The same records as `/key/*` (broker/tenants/vkeys.py); a new key is printed once and only its
hash is stored. Revoking announces the change, so every API process refuses the key at once.
"""

import argparse
import asyncio
import datetime as dt
import json
import sys
import time
from typing import Any

from inferq.broker.connection import Redis, connect
from inferq.broker.errors import BrokerError
from inferq.broker.keys import Keys
from inferq.broker.tenants import vkeys
from inferq.broker.tenants.vkeys import KeyRecord, hash_key, valid_duration
from inferq.config import GatewayConfig


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The `keys` command and its actions."""
    keys = sub.add_parser(
        "keys",
        help="create, list, inspect and revoke virtual keys",
        description="Virtual keys (LiteLLM's): each with its own models, limits and budget. "
        "Example: inferq keys create --alias app1 --models fast --rpm 60 --max-budget 5 "
        "--budget-duration 30d",
    )
    actions = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", parents=[common], help="make a key (printed once)")
    create.add_argument("--alias", help="a unique name for the key")
    create.add_argument("--models", help="comma-separated groups or aliases (default: all)")
    create.add_argument("--max-budget", type=float, help="USD per --budget-duration (or ever)")
    create.add_argument("--budget-duration", help="budget period: 30s, 1h, 7d, 30d, 1mo")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument("--parallel", type=int, help="requests in flight at once")
    create.add_argument("--duration", help="expires after: 30s, 1h, 7d, 30d, 1mo")
    create.add_argument("--team", help="team id")
    create.add_argument("--user", help="user id")
    create.add_argument("--priority", type=int, default=1, help="share of a backend (1-1000)")
    create.add_argument("--admin", action="store_true", help="may manage keys and see all work")
    actions.add_parser("list", parents=[common], help="every key: hash prefix, alias, limits")
    info = actions.add_parser("info", parents=[common], help="one key's record")
    info.add_argument("key", help="the key, its hash, or its alias")
    revoke = actions.add_parser("revoke", parents=[common], help="revoke a key at once")
    revoke.add_argument("key", help="the key, its hash, or its alias")


def run_keys(args: argparse.Namespace, config: GatewayConfig, redis_url: str) -> int:
    """Run one `inferq keys` action; 0 on success."""
    try:
        return asyncio.run(_run(args, config, redis_url))
    except BrokerError as exc:
        print(f"inferq keys: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"inferq keys: {exc}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace, config: GatewayConfig, redis_url: str) -> int:
    redis = connect(redis_url, max_connections=2)
    keys = Keys(config.fabric.key_prefix)
    try:
        if args.action == "create":
            return await _create(args, config, redis, keys)
        if args.action == "list":
            for record in sorted(await vkeys.load_all(redis, keys), key=lambda r: r.created):
                print(_line(record))
            return 0
        token = await _token(redis, keys, args.key)
        if args.action == "info":
            found = await vkeys.load(redis, keys, token) if token else None
            if found is None:
                print("inferq keys: no such key", file=sys.stderr)
                return 1
            print(json.dumps(found.model_dump(mode="json"), indent=2))
            return 0
        gone = await vkeys.delete(redis, keys, [token]) if token else []
        print("revoked" if gone else "no such key")
        return 0 if gone else 1
    finally:
        await redis.aclose()


async def _token(redis: Redis, keys: Keys, named: str) -> str | None:
    if named.startswith(vkeys.KEY_PREFIX):
        return hash_key(named)
    if len(named) == 64 and all(c in "0123456789abcdef" for c in named):
        return named
    return await vkeys.token_of_alias(redis, keys, named)


async def _create(args: argparse.Namespace, config: GatewayConfig, redis: Redis, keys: Keys) -> int:
    models = tuple(m.strip() for m in (args.models or "").split(",") if m.strip())
    unknown = [m for m in models if m not in config.groups and m not in config.aliases]
    if unknown:
        raise ValueError(f"unknown models: {', '.join(unknown)}")
    for duration in (args.budget_duration, args.duration):
        if duration is not None and not valid_duration(duration):
            raise ValueError(f"{duration!r} is not a duration like 30s, 1h, 7d, 1mo")
    if args.alias and await vkeys.token_of_alias(redis, keys, args.alias):
        raise ValueError(f"a key with alias {args.alias!r} exists already")
    key = vkeys.new_key()
    now = time.time()
    record = KeyRecord(
        token=hash_key(key), key_alias=args.alias, models=models, max_budget=args.max_budget,
        budget_duration=args.budget_duration, rpm_limit=args.rpm, tpm_limit=args.tpm,
        max_parallel_requests=args.parallel, team_id=args.team, user_id=args.user,
        expires=now + vkeys.duration_seconds(args.duration) if args.duration else None,
        role="admin" if args.admin else "user", priority=args.priority, created=now,
    )  # fmt: skip
    await vkeys.save(redis, keys, record)
    print(key)
    print(f"(shown once; stored as its hash {record.key_id}…)", file=sys.stderr)
    return 0


def _line(r: KeyRecord) -> str:
    def ts(value: float | None) -> str:
        return "-" if value is None else dt.datetime.fromtimestamp(value, dt.UTC).isoformat()

    limits = " ".join(
        f"{name}={value}"
        for name, value in (
            ("rpm", r.rpm_limit), ("tpm", r.tpm_limit), ("parallel", r.max_parallel_requests),
            ("budget", r.max_budget), ("per", r.budget_duration),
        )
        if value is not None
    )  # fmt: skip
    models = ",".join(r.models) or "*"
    return (
        f"{r.key_id}  {r.key_alias or '-':<16} {r.role:<5} models={models} {limits} "
        f"expires={ts(r.expires)}"
    )
