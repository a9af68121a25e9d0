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
        events: list[dict[str, Any]] = []
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank separators, `event:`, `id:`, `: keep-alive` comments
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                break
            try:
                event = orjson.loads(payload)
            except orjson.JSONDecodeError as exc:
                raise BackendProtocolError(f"backend sent an unparseable event: {exc}") from None
            if (
                not self._raw_errors
                and isinstance(event, dict)
                and "error" in event
                and "choices" not in event
            ):
                raise _stream_error(event["error"])
            events.append(event)
        return events


def _stream_error(error: Any) -> ProviderError:
    message = str(error.get("message") or error) if isinstance(error, dict) else str(error)
    return ProviderError(f"backend error mid-stream: {message}")
