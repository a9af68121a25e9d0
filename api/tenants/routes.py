"""LiteLLM's key management API: `/key/generate`, `/key/info`, `/key/update`, `/key/delete`,
`/key/list`, `/key/regenerate`.

Bodies take LiteLLM's field names (unknown fields are ignored, so scripts written for LiteLLM
work unchanged). A key is shown once, in the answer that made it; afterwards it is named by its
hash (`token`) or its alias. Only the master key and admin keys reach these routes, except
`/key/info`, where a key may read its own record (the auth middleware sees to that).
"""

import datetime as dt
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from inferq.api.errors import GatewayError, InvalidRequest
from inferq.api.inference.requests import parse_body, validate
from inferq.api.state import Gateway, gateway
from inferq.api.tenants.guard import PermissionDenied, period_of
from inferq.api.tenants.principal import principal_of
from inferq.broker.tenants import limits, vkeys
from inferq.broker.tenants.owners import transfer
from inferq.broker.tenants.vkeys import KEY_PREFIX, KeyRecord, hash_key, valid_duration

_HASH = re.compile(r"^[0-9a-f]{64}$")
_ALL = "all-proxy-models"  # LiteLLM's name for "every model"


class KeySettings(BaseModel):
    """The fields `/key/generate` and `/key/update` set (LiteLLM's names)."""

    model_config = ConfigDict(extra="ignore")

    key_alias: str | None = Field(default=None, min_length=1, max_length=200)
    models: list[str] | None = Field(default=None, max_length=1000)
    max_budget: float | None = Field(default=None, ge=0)
    budget_duration: str | None = None
    rpm_limit: int | None = Field(default=None, ge=0)
    tpm_limit: int | None = Field(default=None, ge=0)
    max_parallel_requests: int | None = Field(default=None, ge=0)
    duration: str | None = None
    metadata: dict[str, Any] | None = None
    team_id: str | None = Field(default=None, max_length=200)
    user_id: str | None = Field(default=None, max_length=200)
    role: Literal["admin", "user"] | None = None
    priority: int | None = Field(default=None, ge=1, le=1000)

    @field_validator("budget_duration", "duration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and not valid_duration(value):
            raise ValueError("must be like 30s, 15m, 1h, 7d or 1mo")
        return value


class Generate(KeySettings):
    """`POST /key/generate`: the settings, and optionally the key itself."""

    key: str | None = Field(default=None, min_length=20, max_length=200)


class Update(KeySettings):
    """`POST /key/update`: the key (or its hash) and the fields to change."""

    key: str = Field(min_length=1, max_length=200)


class Delete(BaseModel):
    """`POST /key/delete`: keys (or their hashes), or aliases."""

    model_config = ConfigDict(extra="ignore")
    keys: list[str] | None = Field(default=None, max_length=1000)
    key_aliases: list[str] | None = Field(default=None, max_length=1000)


class Regenerate(BaseModel):
    """`POST /key/regenerate`: the key to replace (its settings carry over)."""

    model_config = ConfigDict(extra="ignore")
    key: str = Field(min_length=1, max_length=200)


def token_of(key: str) -> str:
    """The hash naming a key, given the key or the hash itself."""
    return key if _HASH.match(key) else hash_key(key)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def describe(record: KeyRecord, **extra: Any) -> dict[str, Any]:
    """A key record as LiteLLM shows one (never the key itself)."""
    data = record.model_dump(mode="json", exclude={"expires", "created"})
    data["models"] = list(record.models)
    data["expires"] = _iso(record.expires)
    data["created_at"] = _iso(record.created)
    data["key_id"] = record.key_id
    return {**data, **extra}


def _check_models(gw: Gateway, models: list[str] | None) -> tuple[str, ...] | None:
    if models is None:
        return None
    names = [m for m in models if m != _ALL]
    unknown = [m for m in names if m not in gw.config.groups and m not in gw.config.aliases]
    if unknown:
        raise InvalidRequest(
            f"Unknown models {', '.join(unknown[:10])}; known: "
            f"{', '.join(gw.config.public_models())}",
            param="models",
        )
    return tuple(names)


def _settings(gw: Gateway, body: KeySettings, now: float) -> dict[str, Any]:
    fields = body.model_dump(exclude_unset=True, exclude={"key", "duration", "models"})
    models = _check_models(gw, body.models)
    if models is not None:
        fields["models"] = models
    if "duration" in body.model_fields_set:
        fields["expires"] = now + vkeys.duration_seconds(body.duration) if body.duration else None
    if fields.get("metadata") is None:
        fields.pop("metadata", None)
    return fields


async def _alias_taken(gw: Gateway, alias: str | None, token: str) -> None:
    if alias is None:
        return
    owner = await vkeys.token_of_alias(gw.redis, gw.keys, alias)
    if owner is not None and owner != token:
        raise InvalidRequest(f"A key with alias {alias!r} exists already.", param="key_alias")


async def generate(request: Request) -> Response:
    """Make a key; the answer is the only place the key ever appears."""
    gw = gateway(request)
    body = validate(Generate, parse_body(await request.body()))
    if body.key is not None and not body.key.startswith(KEY_PREFIX):
        raise InvalidRequest(f"a chosen key must start with {KEY_PREFIX!r}", param="key")
    key = body.key or vkeys.new_key()
    now = time.time()
    token = hash_key(key)
    await _alias_taken(gw, body.key_alias, token)
    if await vkeys.load(gw.redis, gw.keys, token) is not None:
        raise InvalidRequest("That key exists already.", param="key")
    record = KeyRecord(token=token, created=now, **_settings(gw, body, now))
    await vkeys.save(gw.redis, gw.keys, record)
    return JSONResponse(describe(record, key=key))


async def _find(gw: Gateway, key: str) -> KeyRecord:
    record = await vkeys.load(gw.redis, gw.keys, token_of(key))
    if record is None:
        raise GatewayError("No such key.", status=404, type="not_found_error", param="key")
    return record


async def info(request: Request) -> Response:
    """One key's record and spend: any key for admins, its own for an ordinary key."""
    gw = gateway(request)
    me = principal_of(request.scope)
    asked = request.query_params.get("key")
    if asked is None:
        if me.record is None:
            raise InvalidRequest("name the key: /key/info?key=...", param="key")
        record = me.record
    else:
        record = await _find(gw, asked)
        if not me.admin and (me.record is None or record.token != me.record.token):
            raise PermissionDenied("A key may read only its own info.")
    await gw.guard.flush()
    period, resets = period_of(record, time.time())
    spent = await limits.read_spend(gw.redis, gw.keys, [(record.key_id, period)])
    used = (await vkeys.last_used(gw.redis, gw.keys)).get(record.key_id)
    extra = {"spend": spent[(record.key_id, period)], "budget_reset_at": _iso(resets),
             "last_used": _iso(used)}  # fmt: skip
    return JSONResponse({"key": record.token, "info": describe(record, **extra)})


async def update(request: Request) -> Response:
    """Change a key's settings (the key itself stays)."""
    gw = gateway(request)
    body = validate(Update, parse_body(await request.body()))
    record = await _find(gw, body.key)
    await _alias_taken(gw, body.key_alias, record.token)
    changed = record.model_copy(update=_settings(gw, body, time.time()))
    changed = KeyRecord.model_validate(changed.model_dump())
    await vkeys.save(gw.redis, gw.keys, changed)
    gw.key_cache.forget(record.token)
    return JSONResponse(describe(changed))


async def delete(request: Request) -> Response:
    """Revoke keys, named by key, hash or alias; every API process refuses them at once."""
    gw = gateway(request)
    body = validate(Delete, parse_body(await request.body()))
    tokens = [token_of(k) for k in body.keys or []]
    for alias in body.key_aliases or []:
        token = await vkeys.token_of_alias(gw.redis, gw.keys, alias)
        if token is not None:
            tokens.append(token)
    if not tokens:
        raise GatewayError("No such key.", status=404, type="not_found_error", param="keys")
    gone = await vkeys.delete(gw.redis, gw.keys, tokens)
    for token in tokens:
        gw.key_cache.forget(token)
    return JSONResponse({"deleted_keys": gone})


async def list_keys(request: Request) -> Response:
    """Every key, by hash (`return_full_object=true`: the records)."""
    gw = gateway(request)
    records = sorted(await vkeys.load_all(gw.redis, gw.keys), key=lambda r: r.created)
    full = request.query_params.get("return_full_object", "").lower() == "true"
    keys: list[Any] = [describe(r) for r in records] if full else [r.token for r in records]
    return JSONResponse(
        {"keys": keys, "total_count": len(keys), "current_page": 1, "total_pages": 1}
    )


async def regenerate(request: Request) -> Response:
    """Replace a key by a new one with the same settings; the old one stops working."""
    gw = gateway(request)
    body = validate(Regenerate, parse_body(await request.body()))
    old = await _find(gw, body.key)
    key = vkeys.new_key()
    record = old.model_copy(update={"token": hash_key(key), "id": old.key_id})
    await vkeys.save(gw.redis, gw.keys, record, replaces=old.token)
    await transfer(gw.redis, gw.keys, old.token, record.token)  # its files and batches
    gw.key_cache.forget(old.token)
    return JSONResponse(describe(record, key=key))


ROUTES: list[tuple[str, Callable[[Request], Awaitable[Response]], str]] = [
    ("/key/generate", generate, "POST"),
    ("/key/info", info, "GET"),
    ("/key/update", update, "POST"),
    ("/key/delete", delete, "POST"),
    ("/key/list", list_keys, "GET"),
    ("/key/regenerate", regenerate, "POST"),
]
