"""`inferq reload`: every API and worker process rereads its config; print what each said."""

import asyncio
import sys

from inferq.broker.connection import connect
from inferq.broker.errors import BrokerError
from inferq.broker.keys import Keys
from inferq.broker.ops.control import Answer, broadcast_reload
from inferq.config import GatewayConfig


def reload_all(config: GatewayConfig, redis_url: str, wait_seconds: float) -> int:
    """0 when every listening process applied its config; 1 otherwise (refused, silent, none)."""
    try:
        listeners, answers = asyncio.run(_broadcast(config, redis_url, wait_seconds))
    except BrokerError as exc:
        print(f"inferq reload: {exc}", file=sys.stderr)
        return 1
    if listeners == 0:
        print(
            "inferq reload: no API or worker process is listening "
            f"(key_prefix {config.fabric.key_prefix!r} on this Redis)",
            file=sys.stderr,
        )
        return 1
    for answer in sorted(answers, key=lambda a: a.process):
        print(f"{'applied' if answer.ok else 'REFUSED'}  {answer.process}: {answer.detail}")
    missing = listeners - len(answers)
    if missing:
        print(f"{missing} of {listeners} processes did not answer within {wait_seconds:g}s")
    return 0 if not missing and all(a.ok for a in answers) else 1


async def _broadcast(
    config: GatewayConfig, redis_url: str, wait_seconds: float
) -> tuple[int, list[Answer]]:
    redis = connect(redis_url, max_connections=2, blocking_reads=True)
    try:
        return await broadcast_reload(redis, Keys(config.fabric.key_prefix), wait_seconds)
    finally:
        await redis.aclose()
