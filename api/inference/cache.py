"""Response cache policy: which requests are equal, what the client asked of the cache, and how
a stored answer is replayed as the same replies a live one would produce.

Two requests are equal when their model group and every field that changes the output are
equal once config defaults are filled in; `stream`, `user` and gateway fields do not count. An
entry stores the whole answer once, in OpenAI's shape; a streamed request replays it as
chunks, a plain one as a completion, whichever way it was first produced.
"""

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.datastructures import Headers

from inferq.broker.messages import Job, JobKind, Reply, ReplyKind
from inferq.config import CacheConfig, GatewayConfig

# Fields that never change the answer: transport, identity and gateway steering.
_IGNORED = frozenset(
    {
        "stream", "stream_options", "user", "metadata", "cache", "caching", "timeout",
        "stream_timeout", "num_retries", "fallbacks", "disable_fallbacks", "api_key", "api_base",
        "base_url", "api_version", "mock_response", "model", "context_window_fallback_dict",
    }
)  # fmt: skip


@dataclass(frozen=True)
class CachePlan:
    """What to do with the cache for one request."""

    digest: str
    lookup: bool
    store: bool
    ttl: float
    max_age: float | None
    namespace: str | None


def plan(
    config: GatewayConfig, kind: JobKind, model: str, data: dict[str, Any], headers: Headers
) -> CachePlan | None:
    """The cache plan for a request, or None when caching is off for it."""
    cache: CacheConfig = config.cache
    if not cache.enabled:
        return None
    route = config.route(model)
    if route is None:
        return None
    raw_controls = data.get("cache")
    controls: dict[str, Any] = raw_controls if isinstance(raw_controls, dict) else {}
    header = headers.get("cache-control", "").lower()
    lookup = not controls.get("no-cache") and "no-cache" not in header
    store = not controls.get("no-store") and "no-store" not in header
    if not (lookup or store):
        return None
    group = route.chain[0]
    deployments = config.groups.get(group, ())
    defaults = (
        dict(deployments[0].defaults) if deployments and kind is not JobKind.EMBEDDING else {}
    )
    canonical = {
        **defaults,
        **{k: v for k, v in data.items() if k not in _IGNORED and v is not None},
    }
    blob = orjson.dumps([kind.value, group, canonical], option=orjson.OPT_SORT_KEYS)
    ttl = _number(controls.get("ttl")) or cache.ttl
    return CachePlan(
        digest=hashlib.sha256(blob).hexdigest(),
        lookup=lookup,
        store=store,
        ttl=ttl,
        max_age=_number(controls.get("s-maxage")),
        namespace=str(controls["namespace"]) if controls.get("namespace") else None,
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value > 0 else None


def entry(kind: JobKind, deltas: list[Reply], done: Reply) -> bytes:
    """The stored form of a complete, successful answer."""
    record: dict[str, Any] = {
        "kind": kind.value,
        "stored": time.time(),
        "group": done.group,
        "deployment": done.deployment,
        "usage": done.usage,
    }
    if done.response is not None:
        record["response"] = done.response
    else:
        record["chunks"] = [choices for r in deltas for choices in r.chunks or []]
    return orjson.dumps(record)


def replay(job: Job, raw: bytes, max_age: float | None) -> list[Reply] | None:
    """The replies a live answer would have produced, from a stored entry (None if too old)."""
    record = orjson.loads(raw)
    if max_age is not None and time.time() - float(record.get("stored", 0)) > max_age:
        return None
    common = {"job": job.id, "group": record.get("group"), "deployment": record.get("deployment")}
    usage = record.get("usage")
    if not job.stream:
        response = record.get("response") or _completion_from(record.get("chunks") or [])
        return [Reply(seq=0, kind=ReplyKind.DONE, response=response, usage=usage, **common)]
    chunks = record.get("chunks") or _chunks_from(record.get("response") or {})
    return [
        Reply(seq=0, kind=ReplyKind.DELTA, chunks=chunks, **common),
        Reply(seq=1, kind=ReplyKind.DONE, usage=usage, **common),
    ]


def _chunks_from(response: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """A stored completion as stream chunks: each choice's message, then its finish."""
    chunks: list[list[dict[str, Any]]] = []
    for choice in response.get("choices", []):
        index = choice.get("index", 0)
        if "message" in choice:
            delta = {k: v for k, v in choice["message"].items() if v is not None}
            for i, call in enumerate(delta.get("tool_calls") or []):
                call.setdefault("index", i)
            chunks.append([{"index": index, "delta": delta, "finish_reason": None}])
            chunks.append(
                [{"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}]
            )
        else:  # text completion
            chunks.append([{"index": index, "text": choice.get("text", ""), "finish_reason": None}])
            chunks.append(
                [{"index": index, "text": "", "finish_reason": choice.get("finish_reason")}]
            )
    return chunks


def _completion_from(chunks: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Stored stream chunks assembled into one completion (content and tool calls joined)."""
    choices: dict[int, dict[str, Any]] = {}
    for items in chunks:
        for c in items:
            index = int(c.get("index", 0))
            choice = choices.setdefault(index, {"index": index, "finish_reason": None})
            if c.get("finish_reason"):
                choice["finish_reason"] = c["finish_reason"]
            if "delta" not in c:
                choice["text"] = choice.get("text", "") + (c.get("text") or "")
                continue
            message = choice.setdefault("message", {"role": "assistant", "content": None})
            delta = c.get("delta") or {}
            if delta.get("content"):
                message["content"] = (message["content"] or "") + delta["content"]
            for call in delta.get("tool_calls") or []:
                _merge_call(message.setdefault("tool_calls", []), call)
    return {"choices": [choices[i] for i in sorted(choices)]}


def _merge_call(calls: list[dict[str, Any]], delta: dict[str, Any]) -> None:
    index = int(delta.get("index", 0))
    while len(calls) <= index:
        calls.append({"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
    call = calls[index]
    if delta.get("id"):
        call["id"] = delta["id"]
    function = delta.get("function") or {}
    call["function"]["name"] += function.get("name") or ""
    call["function"]["arguments"] += function.get("arguments") or ""
