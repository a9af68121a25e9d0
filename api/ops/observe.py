"""`GET /usage` (totals and breakdowns by day, group, deployment and key) and `GET /metrics`."""

import datetime as dt
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from inferq.api.errors import InvalidRequest
from inferq.api.state import Gateway, gateway
from inferq.api.tenants.principal import principal_of
from inferq.broker.errors import BrokerError
from inferq.broker.jobs.queue import depths
from inferq.broker.ops.limits import cooldowns
from inferq.broker.ops.registry import live_workers
from inferq.broker.ops.usage import FIELDS, read_days

_MAX_DAYS = 366


async def usage_report(request: Request) -> JSONResponse:
    """Usage between `start` and `end` (YYYY-MM-DD, default today, UTC), optionally for one
    `model` (group)."""
    today = dt.datetime.now(dt.UTC).date()
    start = _date(request.query_params.get("start"), today, "start")
    end = _date(request.query_params.get("end"), today, "end")
    if end < start or (end - start).days >= _MAX_DAYS:
        raise InvalidRequest(
            f"start..end must be ordered and within {_MAX_DAYS} days", param="start"
        )
    model = request.query_params.get("model")
    report = await usage_between(gateway(request), start, end, model)
    me = principal_of(request.scope)
    if not me.admin:
        report = own_usage(report, me.key_id or "")
    return JSONResponse(report)


def own_usage(report: dict[str, Any], key_id: str) -> dict[str, Any]:
    """What an ordinary key may read of a usage report: its own totals, nobody else's."""
    mine = report["by_key"].get(key_id, _zero())
    return {"start": report["start"], "end": report["end"], "model": report["model"],
            "key": key_id, "totals": mine, "by_key": {key_id: mine}}  # fmt: skip


async def usage_between(
    gw: Gateway, start: dt.date, end: dt.date, model: str | None = None
) -> dict[str, Any]:
    """Totals and breakdowns by group, deployment, key and provider from `start` to `end`
    (UTC days), for one `model` (group) or all: the body of `GET /usage`."""
    await gw.usage.flush()  # include what this process has not written yet
    days = [str(start + dt.timedelta(days=i)) for i in range((end - start).days + 1)]
    data = await read_days(gw.redis, gw.keys, days)
    breakdown: dict[str, dict[str, dict[str, float]]] = {
        "group": {}, "deployment": {}, "key": {}, "provider": {},
    }  # fmt: skip
    per_day: list[dict[str, Any]] = []
    for day in days:
        groups = data[day].get("group", {})
        day_total = _zero()
        for dimension, values in data[day].items():
            for value, numbers in values.items():
                if dimension == "group" and model and value != model:
                    continue
                if dimension != "group" and model:
                    continue  # per-deployment and per-key totals are not split by group
                by_value = breakdown.setdefault(dimension, {})
                _add(by_value.setdefault(value, _zero()), numbers)
        for value, numbers in groups.items():
            if not model or value == model:
                _add(day_total, numbers)
        per_day.append({"date": day, **day_total})
    totals = _zero()
    for row in per_day:
        _add(totals, row)
    return {
        "start": str(start),
        "end": str(end),
        "model": model,
        "totals": totals,
        "by_group": breakdown["group"],
        "by_deployment": breakdown["deployment"],
        "by_key": breakdown["key"],
        "by_provider": breakdown["provider"],
        "days": per_day,
    }


def _date(value: str | None, default: dt.date, name: str) -> dt.date:
    if not value:
        return default
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be a date like 2026-11-26", param=name) from None


def _zero() -> dict[str, float]:
    return dict.fromkeys(FIELDS, 0.0)


def _add(into: dict[str, Any], numbers: dict[str, Any]) -> None:
    for name in FIELDS:
        into[name] = round(float(into.get(name, 0)) + float(numbers.get(name, 0)), 10)


async def metrics(request: Request) -> Response:
    """Prometheus text format: this process's counters, plus queue, worker and cooldown gauges
    read from Redis now."""
    gw = gateway(request)
    m = gw.usage.metrics
    try:
        workers = await live_workers(gw.redis, gw.keys)
        queues = await depths(gw.redis, gw.keys, list(gw.config.groups))
        cooling = await cooldowns(gw.redis, gw.keys, gw.config.deployment_keys())
        for group, deployments in gw.config.groups.items():
            m.queue_depth.labels(group).set(queues[group].waiting)
            m.queue_running.labels(group).set(queues[group].running)
            m.batch_depth.labels(group).set(queues[group].batch_waiting)
            m.batch_running.labels(group).set(queues[group].batch_running)
            for d in deployments:
                m.workers.labels(d.id).set(sum(1 for w in workers if w.deployment == d.id))
                m.cooldown.labels(d.id).set(cooling[d.id])
    except BrokerError:
        pass  # counters still answer while Redis is away; gauges keep their last values
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
