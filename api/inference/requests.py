"""From an HTTP body to a job: parse, validate, resolve the model's chain of groups."""

import secrets
import time
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from inferq.api.errors import GatewayError, InvalidRequest, Unavailable
from inferq.api.state import Gateway
from inferq.broker.bodies import GatewayOptions, backend_fields, invalid_body
from inferq.broker.messages import Job, JobKind
from inferq.config.errors import NoUsableGroup, UnknownModel

# Bounds on a body's shape (its size is bounded by `max_request_bytes` before it is read): deep
# nesting and huge arrays cost the API and the backend far more than their bytes suggest.
MAX_DEPTH = 32
MAX_ITEMS = 10_000  # elements of any one array or object, e.g. `messages`
MAX_STRING = 8_000_000  # characters of any one string


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object within the bounds above, or a 400."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    # A small body with few brackets cannot break a bound (counting bytes is far cheaper than
    # walking the tree, and most requests are small).
    small = len(raw) < 2 * MAX_ITEMS and raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH
    problem = None if small else _shape_problem(data)
    if problem is not None:
        raise InvalidRequest(f"The request body is too large in shape: {problem}.")
    return data


def _shape_problem(data: dict[str, Any]) -> str | None:
    """What breaks a bound, if anything (one pass over the body, no recursion)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        if len(node) > MAX_ITEMS:
            return f"an array or object has more than {MAX_ITEMS} elements"
        for child in node.values() if type(node) is dict else node:
            kind = type(child)
            if kind is str:
                if len(child) > MAX_STRING:
                    return f"a string is longer than {MAX_STRING} characters"
            elif kind is dict or kind is list:
                stack.append((child, depth + 1))
    return None


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: dict[str, Any]) -> M:
    """`data` as `model`, or a 400 naming the first bad field OpenAI-style (`messages.0.role`)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        bad = invalid_body(exc)
        raise InvalidRequest(bad.message, param=bad.param) from None


def make_job(
    gw: Gateway,
    kind: JobKind,
    options: GatewayOptions,
    body: dict[str, Any],
    *,
    request_id: str | None = None,
    include_usage: bool = False,
    key: str | None = None,
) -> Job:
    """The job for a validated request: its chain of groups, deadline and reply address;
    `request_id` names it in every log line about it; `key` is the virtual key's id."""
    config = gw.config
    try:
        chain = config.resolve(options.model, options.fallbacks, options.disable_fallbacks)
    except UnknownModel as exc:
        raise unknown_model(gw, exc.name, exc.param) from None
    except NoUsableGroup as exc:
        raise Unavailable(str(exc)) from None
    within = [g for g in chain if g not in gw.budgets.blocked]
    if not within:
        reasons = "; ".join(gw.budgets.blocked[g] for g in chain)
        raise GatewayError(
            f"Model {options.model} is over budget ({reasons}).",
            status=429,
            type="budget_exceeded",
            code="budget_exceeded",
        )
    now = time.time()
    timeout = options.timeout or config.router.timeout or config.fabric.default_timeout
    return Job(
        id=secrets.token_hex(12),
        kind=kind,
        model=options.model,
        group=within[0],
        fallbacks=within[1:],
        body=backend_fields(body),
        stream=options.stream,
        include_usage=include_usage,
        reply_to=gw.dispatcher.channel,
        created=now,
        deadline=now + timeout,
        num_retries=options.num_retries,
        stream_timeout=options.stream_timeout,
        request_id=request_id,
        key=key,
    )


def unknown_model(gw: Gateway, name: str, param: str = "model") -> InvalidRequest:
    """The 400 for a model name no group or alias answers to."""
    available = ", ".join(gw.config.public_models())
    return InvalidRequest(
        f"Invalid model name passed in {param}={name}. Available models: {available}",
        param=param,
        code="model_not_found",
    )
