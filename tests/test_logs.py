"""The log formats: text lines with key=value fields, and one JSON object per line."""

import json
import logging
import sys

from inferq.cli.logs import JsonFormatter, TextFormatter, render_fields


def record(msg: str, *args: object, fields: dict[str, object] | None = None) -> logging.LogRecord:
    rec = logging.LogRecord("inferq.access", logging.INFO, __file__, 1, msg, args, None)
    if fields is not None:
        rec.fields = fields
    return rec


FIELDS = {
    "request_id": "abc-1",
    "path": "/v1/chat/completions",
    "model": 'my "model"\nINFO forged line',  # a client's text must not make a second line
    "group": None,
    "status": 200,
    "latency_ms": 2.5,
}


def test_text_appends_fields_as_key_value_pairs_on_one_line() -> None:
    line = TextFormatter().format(record("request", fields=FIELDS))
    assert "\n" not in line
    assert line.endswith(
        "INFO inferq.access: request request_id=abc-1 path=/v1/chat/completions "
        'model="my \\"model\\"\\nINFO forged line" status=200 latency_ms=2.5'
    )
    assert render_fields({"a": None}) == ""


def test_text_without_fields_is_the_plain_message() -> None:
    line = TextFormatter().format(record("job %s req %s: retry", "j1", "r1"))
    assert line.endswith("INFO inferq.access: job j1 req r1: retry")


def test_json_has_the_standard_keys_and_each_field_as_a_key() -> None:
    data = json.loads(JsonFormatter().format(record("request", fields={**FIELDS, "level": "x"})))
    assert data["level"] == "INFO" and data["logger"] == "inferq.access"
    assert data["msg"] == "request" and data["ts"].endswith("Z") and "T" in data["ts"]
    assert data["model"] == FIELDS["model"] and data["status"] == 200
    assert data["group"] is None  # the same keys on every line, null where unknown


def test_json_keeps_a_traceback_on_the_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("w", logging.ERROR, __file__, 1, "failed %d", (3,), sys.exc_info())
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    data = json.loads(line)
    assert data["msg"] == "failed 3" and "ValueError: boom" in data["exc"]
