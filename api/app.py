"""`create_app(config, redis_url)`: the FastAPI facade, its routes, errors and lifespan."""

import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from inferq.api.accounting.budgets import BudgetView
from inferq.api.accounting.usage import Metrics, UsageRecorder
from inferq.api.batch import routes as batches
from inferq.api.batch.driver import BatchDriver
from inferq.api.errors import GatewayError, InvalidRequest, NotFound, Unavailable
from inferq.api.inference.chat import chat_completions, completions, embeddings
from inferq.api.inference.count_tokens import count_tokens
from inferq.api.inference.live import LiveGroups
from inferq.api.inference.messages import messages
from inferq.api.inference.models import list_models, retrieve_model
from inferq.api.middleware.access import finish_response, logged
from inferq.api.middleware.gate import Endpoint, Gate
from inferq.api.ops.health import health, liveliness, readiness
from inferq.api.ops.observe import metrics, usage_report
from inferq.api.ops.ui import Dashboard
from inferq.api.responses import routes as responses
from inferq.api.state import CurrentConfig, Gateway
from inferq.api.tenants import routes as key_routes
from inferq.api.tenants import teams as team_routes
from inferq.api.tenants.cache import KeyCache
from inferq.api.tenants.fairshare import FairShare
from inferq.api.tenants.guard import Guard
from inferq.broker.connection import Redis, connect
from inferq.broker.errors import BrokerError, BrokerUnavailable
from inferq.broker.jobs.cache import ResponseCache
from inferq.broker.jobs.replies import ReplyDispatcher
from inferq.broker.keys import Keys
from inferq.broker.ops.control import Reloader
from inferq.broker.subscriber import Subscriber
from inferq.config import CacheConfig, GatewayConfig
from inferq.config.reload import ConfigFile

log = logging.getLogger("inferq.api")


def create_app(
    config: GatewayConfig, redis_url: str, config_file: ConfigFile | None = None
) -> Gate:
    """Build the API (the FastAPI app behind its `Gate`); Redis connections and the reply
    subscription are made in its lifespan. With `config_file`, the API follows reloads of it
    (SIGHUP, file change, `inferq reload`)."""
    current = CurrentConfig(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keys = Keys(config.fabric.key_prefix)
        redis = connect(redis_url, max_connections=128)
        # Three subscriptions: replies, key changes, and reload requests.
        listener = connect(redis_url, max_connections=3, blocking_reads=True)
        dispatcher = ReplyDispatcher(listener, keys.reply(secrets.token_hex(8)))
        await dispatcher.start()
        if not dispatcher.ready:
            log.warning(
                "Redis at %s is not answering yet; requests get 503 until it does",
                _safe_url(redis_url),
            )
        live = LiveGroups(redis, keys, config)
        live.start()
        # cache_params.host/port/password put the cache on a Redis of its own.
        cache_redis = connect(cache_url(config.cache, redis_url), max_connections=64)
        cache = ResponseCache(cache_redis, keys, config.cache.namespace or "default")
        usage = UsageRecorder(redis, keys, config, Metrics())
        usage.start()
        budgets = BudgetView(config, redis, keys)
        budgets.start()
        driver = BatchDriver(redis, keys, config, owner=f"{socket.gethostname()}:{os.getpid()}")
        driver.start()
        fair = FairShare()
        key_cache, guard = _start_tenants(redis, listener, keys, fair)
        gw = Gateway(current, redis, keys, dispatcher, live, cache, usage, budgets,
                     key_cache, guard, driver, fair)  # fmt: skip
        app.state.gateway = gw
        try:
            async with _following(config_file, gw, listener):
                yield
        finally:
            await driver.stop()
            await _stop_tenants(key_cache, guard)
            await budgets.stop()
            await usage.stop()
            await cache_redis.aclose()
            await live.stop()
            await dispatcher.stop()
            await redis.aclose()
            await listener.aclose()

    if not config.master_key:
        log.warning(
            "NO MASTER KEY CONFIGURED: every route is open to anyone who can reach this port. "
            "Set general_settings.master_key."
        )
    app = FastAPI(title="inferq", lifespan=lifespan, docs_url=None, redoc_url=None)
    hot = _inference_routes()
    for path, endpoint in hot.items():
        app.add_route(path, endpoint, methods=["POST"])  # the Gate serves them; 405 otherwise
    _add_routes(app)
    for path, endpoint, method in Dashboard(current).routes():
        app.add_api_route(path, endpoint, methods=[method])
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(BrokerError, _broker_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    return Gate(app, current, hot, app.exception_handlers)


def _inference_routes() -> dict[str, Endpoint]:
    """The POST routes the Gate serves itself: plain endpoints that read their own body and
    write their access line through the usage Tracker."""
    routes: dict[str, Endpoint] = {"/v1/messages": messages}
    for prefix in ("/v1", ""):
        routes[f"{prefix}/chat/completions"] = chat_completions
        routes[f"{prefix}/completions"] = completions
        routes[f"{prefix}/embeddings"] = embeddings
        routes[f"{prefix}/responses"] = responses.create_response
    routes["/v1/messages/count_tokens"] = count_tokens
    return routes


def _start_tenants(
    redis: Redis, listener: Redis, keys: Keys, fair: FairShare
) -> tuple[KeyCache, Guard]:
    """The virtual keys' cache (kept current over pub/sub) and their limits and budgets."""
    key_cache = KeyCache(redis, listener, keys)
    key_cache.start()
    guard = Guard(
        redis, keys, key_cache, fair=fair, process=f"{socket.gethostname()}:{os.getpid()}"
    )
    guard.start()
    return key_cache, guard


async def _stop_tenants(key_cache: KeyCache, guard: Guard) -> None:
    await guard.stop()
    await key_cache.stop()


def _add_routes(app: FastAPI) -> None:
    # The inference routes (`_inference_routes`) write their access line through the usage
    # Tracker (api/middleware/access.py); these are wrapped by `logged`.
    for prefix in ("/v1", ""):
        app.add_api_route(
            f"{prefix}/responses/{{response_id}}",
            logged(responses.retrieve_response),
            methods=["GET"],
        )
        app.add_api_route(
            f"{prefix}/responses/{{response_id}}",
            logged(responses.remove_response),
            methods=["DELETE"],
        )
        app.add_api_route(f"{prefix}/models", logged(list_models), methods=["GET"])
        app.add_api_route(
            f"{prefix}/models/{{model:path}}", logged(retrieve_model), methods=["GET"]
        )
        app.add_api_route(f"{prefix}/files", logged(batches.upload_file), methods=["POST"])
        app.add_api_route(f"{prefix}/files", logged(batches.list_all_files), methods=["GET"])
        app.add_api_route(
            f"{prefix}/files/{{file_id}}", logged(batches.retrieve_file), methods=["GET"]
        )
        app.add_api_route(
            f"{prefix}/files/{{file_id}}", logged(batches.remove_file), methods=["DELETE"]
        )
        app.add_api_route(
            f"{prefix}/files/{{file_id}}/content",
            logged(batches.retrieve_file_content),
            methods=["GET"],
        )
        app.add_api_route(f"{prefix}/batches", logged(batches.create), methods=["POST"])
        app.add_api_route(f"{prefix}/batches", logged(batches.list_all), methods=["GET"])
        app.add_api_route(
            f"{prefix}/batches/{{batch_id}}", logged(batches.retrieve), methods=["GET"]
        )
        app.add_api_route(
            f"{prefix}/batches/{{batch_id}}/cancel", logged(batches.cancel), methods=["POST"]
        )
    for path, endpoint, method in key_routes.ROUTES + team_routes.ROUTES:
        app.add_api_route(path, logged(endpoint), methods=[method])
    app.add_api_route("/usage", logged(usage_report), methods=["GET"])
    app.add_api_route("/metrics", logged(metrics), methods=["GET"])
    app.add_api_route("/health", logged(health), methods=["GET"])
    app.add_api_route("/health/liveliness", logged(liveliness, probe=True), methods=["GET"])
    app.add_api_route("/health/liveness", logged(liveliness, probe=True), methods=["GET"])
    app.add_api_route("/health/readiness", logged(readiness, probe=True), methods=["GET"])


@asynccontextmanager
async def _following(
    config_file: ConfigFile | None, gw: Gateway, listener: Redis
) -> AsyncIterator[None]:
    """Apply reloads of `config_file` to `gw` while the app runs."""
    if config_file is None:
        yield
        return
    reloader = Reloader(
        gw.redis,
        gw.keys,
        config_file,
        gw.config,
        apply=gw.reconfigure,
        process=f"api {socket.gethostname()}:{os.getpid()}",
    )
    control = Subscriber(listener, reloader.handlers())
    control.start()
    reloader.start()
    try:
        yield
    finally:
        await reloader.stop()
        await control.stop()


# Each handler answers in the OpenAI error format with the request's `x-request-id`, and writes
# the request's access line unless its usage Tracker already did.


def _answer(request: Request, error: GatewayError) -> Response:
    return finish_response(request.scope, error.response(), error.type)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return _answer(request, exc)


async def _broker_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, BrokerUnavailable):
        return _answer(
            request, Unavailable("The queue is unreachable (Redis is down); retry shortly.")
        )
    log.error("Redis refused a command: %s", exc)
    return _answer(
        request, Unavailable("The queue refused the request (a Redis error); retry shortly.")
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    param = ".".join(str(p) for p in first["loc"] if p != "body")
    return _answer(
        request, InvalidRequest(f"Invalid request: {param}: {first['msg']}", param=param)
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _answer(request, NotFound(f"No route {request.method} {request.url.path}"))
    if exc.status_code == 405:
        return _answer(
            request,
            GatewayError(
                f"Method {request.method} not allowed on {request.url.path}",
                status=405,
                type="invalid_request_error",
            ),
        )
    kind = "invalid_request_error" if 400 <= exc.status_code < 500 else "api_error"
    return _answer(request, GatewayError(str(exc.detail), status=exc.status_code, type=kind))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # The exception still reaches uvicorn, which logs its traceback (uvicorn.error).
    return _answer(request, GatewayError("Internal error in the API; see its log."))


def cache_url(cache: CacheConfig, redis_url: str) -> str:
    """Where the response cache lives: `cache_params` host/port/password, else the fabric's."""
    if not cache.host:
        return redis_url
    auth = f":{quote(cache.password, safe='')}@" if cache.password else ""
    return f"redis://{auth}{cache.host}:{cache.port or 6379}/0"


def _safe_url(url: str) -> str:
    """A Redis URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
