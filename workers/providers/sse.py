"""Incremental parser for a backend's `text/event-stream` of JSON `data:` lines."""

from typing import Any

import orjson

from inferq.workers.errors import BackendProtocolError, ProviderError


class SSEParser:
    """Feed raw bytes as they arrive; get back the JSON events completed by them."""

    def __init__(self, raw_errors: bool = False) -> None:
        self._buffer = b""
        self._raw_errors = raw_errors  # hand error events to the caller (Anthropic's shape)
        self.done = False  # saw `data: [DONE]`

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Parse every complete line in `data` (plus what was left over from before)."""
        buffer = self._buffer + data
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        payloads = []
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank separators, `event:`, `id:`, `: keep-alive` comments
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                break
            payloads.append(payload)
        if not payloads:
            return []
        events = _parse(payloads)
        if not self._raw_errors:
            for event in events:
                if isinstance(event, dict) and "error" in event and "choices" not in event:
                    raise _stream_error(event["error"])
        return events


def _parse(payloads: list[bytes]) -> list[Any]:
    """The JSON of each payload: all of one read in one orjson call (a call per token cost
    more than the parsing), one by one only to find what is wrong."""
    try:
        events = orjson.loads(b"[" + b",".join(payloads) + b"]")
    except orjson.JSONDecodeError:
        events = None
    if isinstance(events, list) and len(events) == len(payloads):
        return events
    try:
        return [orjson.loads(payload) for payload in payloads]
    except orjson.JSONDecodeError as exc:
        raise BackendProtocolError(f"backend sent an unparseable event: {exc}") from None


def _stream_error(error: Any) -> ProviderError:
    message = str(error.get("message") or error) if isinstance(error, dict) else str(error)
    return ProviderError(f"backend error mid-stream: {message}")
