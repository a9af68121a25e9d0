"""Health routes: `/health` (authenticated, detailed) and unauthenticated probes."""

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse

from inferq.api.state import gateway
from inferq.broker.connection import ping
from inferq.broker.errors import BrokerError
from inferq.broker.jobs.queue import depths
from inferq.broker.ops.limits import cooldowns
from inferq.broker.ops.registry import live_workers


async def health(request: Request) -> JSONResponse:
    """Redis reachability, live workers and queue depth per group, per-deployment status."""
    gw = gateway(request)
    if not await ping(gw.redis):
        return JSONResponse(
            {"status": "unhealthy", "redis": "unreachable", "groups": {}}, status_code=503
        )
    try:
        workers = await live_workers(gw.redis, gw.keys)
        queues = await depths(gw.redis, gw.keys, list(gw.config.groups))
        cooling = await cooldowns(gw.redis, gw.keys, gw.config.deployment_keys())
        groups: dict[str, Any] = {}
        healthy: list[str] = []
        unhealthy: list[dict[str, str]] = []
        for name, deployments in gw.config.groups.items():
            q = queues[name]
            deps = {}
            for d in deployments:
                live = [w for w in workers if w.deployment == d.id]
                reason = d.unavailable_reason or (None if live else "no live worker")
                cooldown = cooling[d.id]
                if cooldown and reason is None:
                    reason = f"cooling down for {cooldown:.1f}s after repeated failures"
                deps[d.id] = {
                    "provider": d.provider.value,
                    "model": d.upstream_model,
                    "workers": len(live),
                    "slots": sum(w.slots for w in live),
                    "in_flight": sum(w.in_flight for w in live),
                    "cooldown_s": round(cooldown, 1),
                    "status": "healthy" if reason is None else "unhealthy",
                    **({"reason": reason} if reason else {}),
                }
                if reason is None:
                    healthy.append(d.id)
                else:
                    unhealthy.append({"deployment": d.id, "reason": reason})
            groups[name] = {
                "queue": {"waiting": q.waiting, "running": q.running},
                "batch": {"waiting": q.batch_waiting, "running": q.batch_running},
                "workers": sum(v["workers"] for v in deps.values()),
                "deployments": deps,
            }
    except BrokerError:
        return JSONResponse({"status": "unhealthy", "redis": "unreachable"}, status_code=503)
    return JSONResponse(
        {
            "status": "healthy" if not unhealthy else "degraded",
            "redis": "connected",
            "healthy_endpoints": healthy,
            "unhealthy_endpoints": unhealthy,
            "healthy_count": len(healthy),
            "unhealthy_count": len(unhealthy),
            "groups": groups,
        }
    )


async def liveliness(request: Request) -> PlainTextResponse:
    """The process answers (LiteLLM's probe path and body)."""
    return PlainTextResponse("I'm alive!")


async def readiness(request: Request) -> JSONResponse:
    """Ready when Redis answers and the reply channel is subscribed."""
    gw = gateway(request)
    redis_ok = await ping(gw.redis)
    ready = redis_ok and gw.dispatcher.ready
    return JSONResponse(
        {
            "status": "healthy" if ready else "unhealthy",
            "redis": "connected" if redis_ok else "unreachable",
        },
        status_code=200 if ready else 503,
    )
