"""Coalescing: fewer reply messages, never a lost or reordered delta."""

from inferq.workers.coalesce import Coalescer


def text(content: str, index: int = 0) -> list[dict[str, object]]:
    return [{"index": index, "delta": {"content": content}, "finish_reason": None}]


def test_text_deltas_of_one_read_merge_into_one() -> None:
    c = Coalescer()
    c.add([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    for word in ("a", "b", "c"):
        c.add(text(word))
    assert c.drain() == [
        [{"index": 0, "delta": {"role": "assistant", "content": "abc"}, "finish_reason": None}]
    ]
    assert c.content_chunks == 3
    assert not c


def test_finish_reason_and_tool_calls_stay_separate_and_in_order() -> None:
    c = Coalescer()
    c.add(text("a"))
    tool = [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "t"}]}, "finish_reason": None}]
    c.add(tool)
    c.add(text("b"))
    c.add([{"index": 0, "delta": {}, "finish_reason": "stop"}])
    items = c.drain()
    assert [i[0]["delta"] for i in items] == [
        {"content": "a"},
        {"tool_calls": [{"index": 0, "id": "t"}]},
        {"content": "b"},
        {},
    ]
    assert c.finish_reasons == {0: "stop"}


def test_different_choice_indexes_do_not_merge() -> None:
    c = Coalescer()
    c.add(text("a", 0))
    c.add(text("b", 1))
    assert len(c.drain()) == 2


def test_null_fields_do_not_block_merging() -> None:
    c = Coalescer()
    c.add([{"index": 0, "delta": {"content": "a", "role": None}, "logprobs": None}])
    c.add([{"index": 0, "delta": {"content": "b", "tool_calls": None}, "logprobs": None}])
    assert c.drain()[0][0]["delta"]["content"] == "ab"


def test_only_plain_text_runs_merge() -> None:
    c = Coalescer()
    c.add([{"index": 0, "delta": {"tool_calls": [{"index": 0}]}, "finish_reason": None}])
    c.add(text("a"))  # a tool call never takes text into it
    c.add([{"index": 0, "delta": {"role": "assistant", "content": "b"}}])  # a role starts anew
    c.add([{"index": 0, "delta": {"content": "c"}, "logprobs": {"content": []}}])
    c.add(text("d"))  # nor does a chunk with logprobs
    c.add([{"index": 0, "text": "e"}])  # a completion's text after a chat delta: its own item
    c.add([{"index": 0, "text": "f", "logprobs": None}])
    assert [i[0].get("delta", i[0].get("text")) for i in c.drain()] == [
        {"tool_calls": [{"index": 0}]},
        {"content": "a"},
        {"role": "assistant", "content": "b"},
        {"content": "c"},
        {"content": "d"},
        "ef",
    ]
    c.add(text("g"))  # a drain closes the run: nothing merges into what was sent
    assert c.drain() == [text("g")]
