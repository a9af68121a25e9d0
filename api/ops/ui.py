"""The operator's dashboard at `/ui`: a login form, the page, and the JSON it polls.

The page (`ui.html`, plain HTML and JavaScript, no build step) polls `GET /ui/data` every two
seconds. A browser cannot send a Bearer header when it opens a page, so `POST /ui/login` takes
the master key (or an admin virtual key) from a form once and answers with a cookie derived from
it (`api/ops/session.py`); an ordinary key is refused (403).
"""

import datetime as dt
import hmac
from collections.abc import Awaitable, Callable
from importlib.resources import files
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from inferq.api.middleware.auth import check, dashboard_login, virtual_key
from inferq.api.ops import session
from inferq.api.ops.observe import usage_between
from inferq.api.state import CurrentConfig, Gateway, gateway
from inferq.broker.ops.status import read_status
from inferq.broker.tenants import vkeys
from inferq.broker.tenants.shares import read_shares

_MAX_FORM_BYTES = 8192
# Throughput and latency come from the latest requests only: this runs in an API process every
# two seconds per open page, and parsing a busy minute's records (30,000 at 500 requests/s)
# would stall the requests it serves. Past this many, rates are scaled from what was read.
_SAMPLE = 2000
# Everything the page needs is inline or same-origin; nothing may frame it.
_HEADERS = MappingProxyType(
    {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": (
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "img-src data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
            "base-uri 'none'"
        ),
    }
)


class Dashboard:
    """The dashboard's routes, for the master key of the config served now (none: open, as the
    rest of the API)."""

    def __init__(self, current: CurrentConfig) -> None:
        self._current = current  # the key can change on reload
        page_dir = files("inferq.api.ops")
        self._page = page_dir.joinpath("ui.html").read_text(encoding="utf-8")
        self._login = page_dir.joinpath("ui_login.html").read_text(encoding="utf-8")

    def routes(self) -> list[tuple[str, Callable[[Request], Awaitable[Response]], str]]:
        """`(path, endpoint, method)` of each of the dashboard's routes."""
        return [
            ("/ui", self.page, "GET"),
            ("/ui/data", self.data, "GET"),
            ("/ui/login", self.login, "POST"),
            ("/ui/logout", self.logout, "POST"),
        ]

    async def page(self, request: Request) -> Response:
        """`GET /ui`: the dashboard, or the login form (401) without valid credentials."""
        if not await self._allowed(request):
            return self._login_page("", status=401)
        return HTMLResponse(self._page, headers=_HEADERS)

    async def login(self, request: Request) -> Response:
        """`POST /ui/login` with form field `master_key`: a session cookie and back to `/ui`,
        or the form again (401) with what went wrong."""
        if self._key is None:
            return RedirectResponse("/ui", status_code=303, headers=_HEADERS)
        presented = await _form_field(request, "master_key")
        if not presented:
            return self._login_page("Enter the master key or an admin key.", status=401)
        token = ""
        if not hmac.compare_digest(presented.encode(), self._key.encode()):
            found = await virtual_key(request.scope, presented.strip().encode())
            if found is None or found.record is None:
                return self._login_page("That is neither the master key nor an admin key.", 401)
            if not found.admin:
                return self._login_page(
                    "That key is not an admin key: the dashboard needs the master key or a key "
                    "made with role admin.",
                    status=403,
                )
            token = found.record.token
        response = RedirectResponse("/ui", status_code=303, headers=_HEADERS)
        response.set_cookie(
            session.COOKIE,
            session.issue(self._key, token=token),
            max_age=session.LIFETIME_S,
            path=session.PATH,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        """`POST /ui/logout`: forget the session cookie."""
        response = RedirectResponse("/ui", status_code=303, headers=_HEADERS)
        response.delete_cookie(session.COOKIE, path=session.PATH, httponly=True, samesite="strict")
        return response

    async def data(self, request: Request) -> Response:
        """`GET /ui/data` (cookie or key, checked by the auth middleware): the fabric now and
        today's usage (UTC)."""
        gw = gateway(request)
        config = gw.config
        groups = {name: [d.id for d in deps] for name, deps in config.groups.items()}
        status = await read_status(gw.redis, gw.keys, groups, limit=_SAMPLE)
        today = dt.datetime.now(dt.UTC).date()
        usage = await usage_between(gw, today, today)
        body: dict[str, Any] = status.as_dict({g: config.unavailable_reason(g) for g in groups})
        for dep_id, dep in body["deployments"].items():
            deployment = config.deployment(dep_id)
            if deployment is not None:
                dep["provider"] = deployment.provider.value
                dep["model"] = deployment.upstream_model
                dep["unavailable"] = deployment.unavailable_reason
        # Per-key totals show with the virtual keys (by alias), not as bare hashes.
        body["usage"] = {
            "day": str(today),
            "totals": usage["totals"],
            "by_group": usage["by_group"],
            "by_deployment": usage["by_deployment"],
        }
        body["keys"] = await _keys_view(gw, usage["by_key"])
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    @property
    def _key(self) -> str | None:
        return self._current.master_key

    async def _allowed(self, request: Request) -> bool:
        if self._key is None or check(request.headers.raw, self._key, dashboard=True) is None:
            return True
        return await dashboard_login(request.scope, self._key) is not None

    def _login_page(self, message: str, status: int) -> HTMLResponse:
        # `message` is one of this module's fixed sentences, never anything the client sent.
        html = self._login.replace("<!--message-->", message)
        return HTMLResponse(html, status_code=status, headers=_HEADERS)


async def _keys_view(gw: Gateway, by_key: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Each virtual key with its limits, today's spend, last use and its queue now."""
    records = await vkeys.load_all(gw.redis, gw.keys)
    used = await vkeys.last_used(gw.redis, gw.keys)
    shares = await read_shares(gw.redis, gw.keys)
    view = []
    for r in sorted(records, key=lambda r: r.created):
        today = by_key.get(r.key_id, {})
        queue = [v for per_key in shares.values() for k, v in per_key.items() if k == r.key_id]
        view.append({
            "id": r.key_id, "alias": r.key_alias or "", "role": r.role, "models": list(r.models),
            "rpm_limit": r.rpm_limit, "tpm_limit": r.tpm_limit,
            "max_parallel_requests": r.max_parallel_requests, "max_budget": r.max_budget,
            "budget_duration": r.budget_duration, "requests_today": today.get("requests", 0),
            "cost_today": today.get("cost", 0.0), "last_used": used.get(r.key_id),
            "in_flight": sum(q[0] for q in queue), "waiting": sum(q[1] for q in queue),
            "batch": sum(q[2] for q in queue),
        })  # fmt: skip
    return view


async def _form_field(request: Request, name: str) -> str | None:
    """One field of a urlencoded form body (the login form has no files, so no multipart)."""
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        return None
    try:
        values = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=8)
    except ValueError:  # more fields than any login form has
        return None
    found = values.get(name)
    return found[0] if found else None
