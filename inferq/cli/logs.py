"""Log records as one line each: plain text, or one JSON object per line (`--log-json`).

A record may carry structured fields, passed as `log.info(msg, extra={"fields": {...}})` (the
API's access line does). The text format appends them as `key=value` pairs, quoting a value that
holds spaces, quotes or control characters; the JSON format makes each a key of its own, beside
`ts`, `level`, `logger` and `msg`. A field that is None is left out of the text and is `null` in
JSON, so every JSON access line has the same keys.
"""

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def render_fields(fields: Mapping[str, Any]) -> str:
    """`key=value` pairs, skipping None values; one line whatever the values hold."""
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        # Numbers are written as they are; a string only when it cannot break the line apart.
        if isinstance(value, str) and (
            not value.isprintable() or " " in value or '"' in value or "=" in value or not value
        ):
            parts.append(f"{key}={orjson.dumps(value).decode()}")
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


class _Clock:
    """A record's time as text, formatted once per second (every line pays only a lookup)."""

    def __init__(self, utc: bool) -> None:
        self._convert = time.gmtime if utc else time.localtime
        self._pattern = "%Y-%m-%dT%H:%M:%S" if utc else "%Y-%m-%d %H:%M:%S"
        self._second = -1
        self._text = ""

    def seconds(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._text = time.strftime(self._pattern, self._convert(second))
            self._second = second
        return self._text


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._clock = _Clock(utc=False)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return f"{self._clock.seconds(record.created)},{int(record.msecs):03d}"

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = getattr(record, "fields", None)
        return f"{line} {render_fields(fields)}" if fields else line


class JsonFormatter(logging.Formatter):
    """One JSON object per record: `ts` (UTC, ISO 8601), `level`, `logger`, `msg`, the
    record's fields, and `exc` (the traceback, as one string) when there is one."""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock(utc=True)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": f"{self._clock.seconds(record.created)}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            for key, value in fields.items():
                line.setdefault(key, value)  # never let a field hide ts, level, logger or msg
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: str, *, json: bool = False) -> None:
    """Send every record (uvicorn's and Python warnings included) to stderr in one format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.captureWarnings(True)
    # One line per backend call is noise at this layer; inferq logs its own outcomes.
    logging.getLogger("httpx").setLevel(logging.WARNING)
