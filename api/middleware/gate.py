"""The API's one middleware, in front of the FastAPI app: authentication, the body limit, and
the inference routes served straight.

Every HTTP request passes `KeyAuth` (api/middleware/auth.py) and `BodyLimit`
(api/middleware/body_limit.py) here. The inference routes (`routes`: plain endpoints that read
their own body) are then called directly, their errors answered by the app's own exception
handlers; every other request goes on to the app. FastAPI's stack (its error, telemetry and
body-limit middlewares, exception middleware, exit stack, route matching over every route)
would add nothing to these routes but CPU on each request.
"""

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from inferq.api.middleware.auth import KeyAuth
from inferq.api.middleware.body_limit import BodyLimit
from inferq.api.state import CurrentConfig

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Any]


class Gate:
    """Authenticates and bounds every HTTP request, then serves it: from `routes` (POST only,
    by exact path) or through `app`. `handlers` answer the errors of `routes` by exception
    class, as the app's exception handlers do (`Exception`'s answers a 500, and the error still
    reaches the server, which logs it)."""

    def __init__(
        self,
        app: ASGIApp,
        current: CurrentConfig,
        routes: Mapping[str, Endpoint] | None = None,
        handlers: Mapping[Any, Handler] | None = None,
    ) -> None:
        self.app = app
        self.auth = KeyAuth(current)
        self._limit = BodyLimit(current)
        self._routes = dict(routes or {})
        self._handlers: dict[Any, Handler] = dict(handlers or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app  # what `request.app` (the Gateway in its state) reads
        endpoint = self._routes.get(scope["path"]) if scope["method"] == "POST" else None
        try:
            answer = await self.auth.refusal(scope)
            if answer is None:
                answer, receive = self._limit.bound(scope, receive)
            if answer is None and endpoint is not None:
                answer = await endpoint(Request(scope, receive))
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            await (await handler(Request(scope, receive), exc))(scope, receive, send)
            if handler is self._handlers.get(Exception):
                raise  # the server logs it with its traceback
            return
        if answer is None:
            await self.app(scope, receive, send)
        else:
            await answer(scope, receive, send)  # a refusal, or the route's answer

    def _handler(self, exc: Exception) -> Handler | None:
        for kind in type(exc).__mro__:
            handler = self._handlers.get(kind)
            if handler is not None:
                return handler
        return None
