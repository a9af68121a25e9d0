"""A worker process: every selected deployment of a group, served from one asyncio loop."""

import asyncio
import logging
import signal

import httpx

from broker.cancel import CancelListener
from broker.connection import connect
from broker.keys import Keys
from config import Deployment, GatewayConfig
from workers.providers import provider_for
from workers.transport import AiohttpTransport
from workers.worker import DeploymentWorker

log = logging.getLogger("inferq.worker")


def select_deployments(
    config: GatewayConfig, groups: list[str] | None, deployment_id: str | None
) -> list[Deployment]:
    """The deployments a worker process should serve; raises ValueError with a clear message."""
    if deployment_id:
        dep = config.deployment(deployment_id)
        if dep is None:
            known = ", ".join(d.id for deps in config.groups.values() for d in deps)
            raise ValueError(f"no deployment {deployment_id!r} (known: {known})")
        if groups and dep.group not in groups:
            raise ValueError(f"deployment {deployment_id!r} belongs to group {dep.group!r}")
        return [dep]
    if groups:
        unknown = [g for g in groups if g not in config.groups]
        if unknown:
            known = ", ".join(config.groups)
            raise ValueError(f"no model group {', '.join(unknown)} (known: {known})")
        return [d for g in groups for d in config.groups[g]]
    return [d for deps in config.groups.values() for d in deps]


async def serve(
    config: GatewayConfig, redis_url: str, deployments: list[Deployment], stop: asyncio.Event
) -> None:
    """Run a DeploymentWorker per deployment until `stop` is set."""
    usable = []
    for dep in deployments:
        reason = dep.unavailable_reason
        if reason:
            log.warning("deployment %s unavailable: %s", dep.id, reason)
        else:
            usable.append(dep)
    if not usable:
        raise ValueError("none of the selected deployments can be served")
    slots = sum(d.max_parallel_requests for d in usable)
    redis = connect(redis_url, max_connections=slots + 4 * len(usable), blocking_reads=True)
    keys = Keys(config.fabric.key_prefix)
    transport = AiohttpTransport(max_connections=slots)
    workers: list[DeploymentWorker] = []

    def on_cancel(job_id: str) -> None:
        for worker in workers:
            worker.cancel(job_id)

    listener = connect(redis_url, max_connections=2, blocking_reads=True)
    cancels = CancelListener(listener, keys, on_cancel)
    cancels.start()
    async with httpx.AsyncClient(transport=transport, trust_env=False) as http:
        workers += [
            DeploymentWorker(
                d, config, redis, provider_for(d, http), is_cancelled=cancels.__contains__
            )
            for d in usable
        ]
        try:
            await asyncio.gather(*(w.run(stop) for w in workers))
        finally:
            await cancels.stop()
            await listener.aclose()
            await redis.aclose()


def run(config: GatewayConfig, redis_url: str, deployments: list[Deployment]) -> None:
    """Blocking entry point: serve until SIGTERM or SIGINT, then drain gracefully."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, redis_url, deployments, stop)

    _run_loop(main())


def _run_loop(coro: "asyncio.Future[None] | object") -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]
