"""The backend SSE parser: split reads, comments, [DONE], errors."""

import pytest

from inferq.workers.errors import BackendProtocolError, ProviderError
from inferq.workers.providers.sse import SSEParser


def test_events_split_across_reads() -> None:
    p = SSEParser()
    assert p.feed(b'data: {"a"') == []
    assert p.feed(b': 1}\n\ndata: {"b": 2}\n') == [{"a": 1}, {"b": 2}]
    assert p.feed(b"\n: keep-alive\n\nevent: x\ndata: [DONE]\n\n") == []
    assert p.done


def test_crlf_lines() -> None:
    assert SSEParser().feed(b'data: {"a": 1}\r\n\r\n') == [{"a": 1}]


def test_garbage_is_a_protocol_error() -> None:
    with pytest.raises(BackendProtocolError):
        SSEParser().feed(b"data: {nope\n")


def test_error_event_raises() -> None:
    with pytest.raises(ProviderError, match="overloaded"):
        SSEParser().feed(b'data: {"error": {"message": "overloaded"}}\n')
