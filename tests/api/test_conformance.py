"""A bounded property-based conformance test over the routes inferq serves.

Hypothesis sends each route bodies that are valid, nearly valid and plain junk (and junk ids in
paths), through a real API and worker to the fake backend. Whatever it sends: no 5xx, errors in
OpenAI's format (Anthropic's on its routes), and every success body validates strictly against
the official SDK's type for that route. A few seconds in all (`max_examples` per route).
"""

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import anthropic.types
import httpx
import openai.types
import openai.types.chat
import openai.types.responses
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support import fabric as fabric_module
from tests.support.fabric import MASTER_KEY, running
from tests.support.fake_backend import Behaviour, FakeBackend

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
EXAMPLES = 30

# ---- strategies -------------------------------------------------------------------------------

text = st.text(max_size=12)
leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
junk = st.recursive(
    leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
served = st.sampled_from(["fake", "chained", "quiet"])
model = st.sampled_from(["fake", "nope", ""]) | text


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly `valid`, sometimes anything."""
    return st.one_of(valid, valid, junk)


def body(
    required: dict[str, Any], optional: dict[str, Any], loose: dict[str, Any]
) -> st.SearchStrategy[Any]:
    """A request body: valid; nearly valid (`loose` values, any field sometimes junk); or junk."""

    def fields(values: dict[str, Any], wrap: Callable[[Any], Any]) -> st.SearchStrategy[Any]:
        return st.fixed_dictionaries(
            {k: wrap(values.get(k, v)) for k, v in required.items()},
            optional={k: wrap(values.get(k, v)) for k, v in optional.items()},
        )

    return st.one_of(fields({}, lambda v: v), fields(loose, maybe), junk)


small = st.integers(1, 6)
parts = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": text}), max_size=2)
chat_message = st.fixed_dictionaries({"role": st.just("user"), "content": st.one_of(text, parts)})
any_chat_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "wizard"]),
     "content": st.one_of(text, parts, st.none())}
)  # fmt: skip
function_tool = st.fixed_dictionaries(
    {"type": st.just("function"), "name": st.sampled_from(["f", "get_weather"]),
     "parameters": st.just({"type": "object", "properties": {}})}
)  # fmt: skip
response_item = st.one_of(
    any_chat_message,
    st.fixed_dictionaries({"type": st.just("function_call"), "call_id": text, "name": text,
                           "arguments": text}),
    st.fixed_dictionaries({"type": st.just("function_call_output"), "call_id": text,
                           "output": text}),
    st.fixed_dictionaries({"type": text}),
)  # fmt: skip
anthropic_message = st.fixed_dictionaries(
    {"role": st.just("user"), "content": st.one_of(text, parts)}
)
any_anthropic_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system"]), "content": st.one_of(text, parts)}
)
sampling = {"temperature": st.floats(0, 2), "top_p": st.floats(0, 1), "stream": st.just(False)}
loose = {
    "model": model, "max_tokens": st.integers(-1, 6), "max_output_tokens": st.integers(-1, 6),
    "temperature": st.floats(-1, 3), "top_p": st.floats(-0.5, 1.5), "n": st.integers(0, 2),
}  # fmt: skip
one_or_more = {"min_size": 1, "max_size": 3}

# route → (body strategy, SDK type of a success body, error format)
OPENAI, ANTHROPIC = "openai", "anthropic"
POSTS: dict[str, tuple[st.SearchStrategy[Any], type[Any], str]] = {
    "/v1/chat/completions": (
        body({"model": served, "messages": st.lists(chat_message, **one_or_more)},
             {"max_tokens": small, "n": st.just(1), **sampling,
              "tools": st.lists(st.fixed_dictionaries({"type": st.just("function"),
                                                       "function": function_tool}), max_size=1)},
             {**loose, "messages": st.lists(any_chat_message, max_size=3)}),
        openai.types.chat.ChatCompletion, OPENAI,
    ),
    "/v1/completions": (
        body({"model": served, "prompt": st.one_of(text, st.lists(text, **one_or_more))},
             {"max_tokens": small, **sampling}, loose),
        openai.types.Completion, OPENAI,
    ),
    "/v1/embeddings": (
        body({"model": served, "input": st.one_of(text, st.lists(text, **one_or_more))}, {},
             loose),
        openai.types.CreateEmbeddingResponse, OPENAI,
    ),
    "/v1/responses": (
        body({"model": served, "input": st.one_of(text, st.lists(chat_message, **one_or_more))},
             {"instructions": text, "max_output_tokens": small, **sampling,
              "tools": st.lists(function_tool, max_size=1),
              "tool_choice": st.sampled_from(["auto", "none", "required"]),
              "store": st.booleans(), "metadata": st.dictionaries(text, text, max_size=2),
              "text": st.fixed_dictionaries({"format": st.fixed_dictionaries(
                  {"type": st.sampled_from(["text", "json_object"])})})},
             {**loose, "input": st.one_of(text, st.lists(response_item, max_size=3)),
              "tool_choice": st.sampled_from(["auto", "sometimes"]) | junk,
              "previous_response_id": text}),
        openai.types.responses.Response, OPENAI,
    ),
    "/v1/messages": (
        body({"model": served, "max_tokens": small,
              "messages": st.lists(anthropic_message, **one_or_more)},
             {"system": text, **sampling},
             {**loose, "messages": st.lists(any_anthropic_message, max_size=3)}),
        anthropic.types.Message, ANTHROPIC,
    ),
    "/v1/messages/count_tokens": (
        body({"model": served, "messages": st.lists(anthropic_message, **one_or_more)},
             {"system": text},
             {**loose, "messages": st.lists(any_anthropic_message, max_size=3)}),
        anthropic.types.MessageTokensCount, ANTHROPIC,
    ),
    "/v1/batches": (
        body({"input_file_id": text, "endpoint": st.sampled_from(["/v1/chat/completions", "x"]),
              "completion_window": st.sampled_from(["24h", "0h", "1m", "forever"])}, {}, {}),
        openai.types.Batch, OPENAI,
    ),
}  # fmt: skip

# GET (and DELETE) with a junk id in the path → SDK type of a success body.
PATHS: dict[str, type[Any]] = {
    "/v1/models/{}": openai.types.Model,
    "/v1/files/{}": openai.types.FileObject,
    "/v1/batches/{}": openai.types.Batch,
    "/v1/responses/{}": openai.types.responses.Response,
}


# ---- the checks -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http(
    module_prefix: str, redis_url: str, fake: FakeBackend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    fake.behaviour = Behaviour(tokens=3)
    tmp = tmp_path_factory.mktemp("conformance")
    with (
        running(
            fabric_module.CONFIG, redis_url, tmp, api_base=fake.api_base, prefix=module_prefix
        ) as fab,
        httpx.Client(base_url=fab.base_url, headers=AUTH, timeout=30) as client,
    ):
        yield client


def check(resp: httpx.Response, sdk_type: type[Any], errors: str) -> None:
    """No 5xx; an error in the route's error format; a success that the SDK's type takes."""
    assert resp.status_code < 500, resp.text
    event(f"HTTP {resp.status_code}")  # shown by --hypothesis-show-statistics
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        assert resp.status_code == 200
        return
    data = orjson.loads(resp.content)
    if resp.status_code >= 400:
        if errors == ANTHROPIC:
            assert data["type"] == "error"
            error = data["error"]
        else:
            error = data["error"]
            assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["type"], str) and error["type"]
        return
    sdk_type.model_validate(data, strict=True)


SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the work tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("route", sorted(POSTS))
@SETTINGS
@given(data=st.data())
def test_post_routes_answer_in_spec(http: httpx.Client, route: str, data: st.DataObject) -> None:
    strategy, sdk_type, errors = POSTS[route]
    payload = data.draw(strategy)
    check(http.post(route, content=orjson.dumps(payload)), sdk_type, errors)


@pytest.mark.parametrize("route", sorted(POSTS))
@SETTINGS
@given(raw=st.binary(max_size=40))
def test_post_routes_refuse_bytes_that_are_not_json(
    http: httpx.Client, route: str, raw: bytes
) -> None:
    _, sdk_type, errors = POSTS[route]
    check(http.post(route, content=raw), sdk_type, errors)


@pytest.mark.parametrize("path", sorted(PATHS))
@SETTINGS
# No "/" in the id: decoded, it changes the route (Starlette answers `/v1/files//` with its
# trailing-slash redirect, which is no error); nor "." or "..", which httpx resolves away
# (`/v1/files/.` is sent as `/v1/files`, the list); nor a lone surrogate, which no URL can
# carry (the test's own `quote` refuses it before any request).
@given(
    name=st.text(
        st.characters(blacklist_characters="/", blacklist_categories=("Cs",)),
        min_size=1,
        max_size=30,
    ).filter(lambda s: s not in (".", ".."))
)
def test_lookups_by_junk_id_answer_in_spec(http: httpx.Client, path: str, name: str) -> None:
    url = path.format(quote(name, safe=""))
    check(http.get(url), PATHS[path], OPENAI)
    if path.startswith("/v1/responses"):
        deleted = http.delete(url)
        assert deleted.status_code == 404
        check(deleted, PATHS[path], OPENAI)


LISTS: dict[str, Callable[[Any], Any]] = {
    "/v1/models": openai.types.Model.model_validate,
    "/v1/files": openai.types.FileObject.model_validate,
    "/v1/batches": openai.types.Batch.model_validate,
}


@pytest.mark.parametrize("path", sorted(LISTS))
def test_lists_answer_in_spec(http: httpx.Client, path: str) -> None:
    page = http.get(path).json()
    assert page["object"] == "list"
    for item in page["data"]:
        LISTS[path](item)
    for key in ("first_id", "last_id"):
        assert page.get(key, "") is not None
