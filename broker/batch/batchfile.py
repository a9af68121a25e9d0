"""OpenAI's batch file format: input lines checked into requests, results written as output
lines (shared by `inferq submit` and the Batch API's driver)."""

from dataclasses import dataclass
from typing import Any

import orjson

from inferq.broker.batch.submit import BatchRequest
from inferq.broker.jobs.results import Outcome
from inferq.broker.messages import JobKind

KINDS = {
    "/v1/chat/completions": JobKind.CHAT,
    "/v1/completions": JobKind.COMPLETION,
    "/v1/embeddings": JobKind.EMBEDDING,
}
# Errors that are not an HTTP answer: OpenAI writes them as `error`, with no `response`.
_NOT_HTTP = frozenset({"batch_cancelled", "result_expired"})


@dataclass(frozen=True)
class Line:
    """One input line: a request to run, or the reason it cannot run."""

    number: int  # from 1
    custom_id: str | None
    request: BatchRequest | None = None
    problem: str | None = None


def parse_input(data: bytes) -> list[Line]:
    """Each non-blank line of a batch input file, checked as far as the file format goes
    (bodies are checked when submitted, as the API checks them)."""
    lines: list[Line] = []
    first_use: dict[str, int] = {}
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        line = _parse_line(number, raw)
        cid = line.custom_id
        if cid is not None and cid in first_use:
            problem = f"duplicate custom_id {cid!r} (first on line {first_use[cid]})"
            line = Line(number, None, problem=problem)
        elif cid is not None:
            first_use[cid] = number
        lines.append(line)
    return lines


def _parse_line(number: int, raw: bytes) -> Line:
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Line(number, None, problem=f"not valid JSON: {exc}")
    if not isinstance(item, dict):
        return Line(number, None, problem="a line must be a JSON object")
    cid = item.get("custom_id")
    if not isinstance(cid, str) or not cid:
        return Line(number, None, problem="custom_id is missing (a non-empty string)")
    url, body = item.get("url"), item.get("body")
    kind = KINDS.get(url if isinstance(url, str) else "")
    if kind is None:
        problem = f"url must be one of {', '.join(KINDS)}, not {url!r}"
    elif str(item.get("method", "POST")).upper() != "POST":
        problem = "method must be POST"
    elif not isinstance(body, dict):
        problem = "body must be a JSON object"
    else:
        return Line(number, cid, request=BatchRequest(cid, kind, body))
    return Line(number, cid, problem=problem)


def result_line(outcome: Outcome) -> dict[str, Any]:
    """An output line as OpenAI's batch writes it."""
    line: dict[str, Any] = {"id": f"batch_req_{outcome.job}", "custom_id": outcome.custom_id}
    error = outcome.error
    if error is None:
        response = {"status_code": 200, "request_id": outcome.job, "body": outcome.response}
        return {**line, "response": response, "error": None}
    if error.code in _NOT_HTTP:
        return {**line, "response": None, "error": {"code": error.code, "message": error.message}}
    code = error.code if error.code is not None else str(error.status)
    body = {"error": {"message": error.message, "type": error.type, "param": error.param,
                      "code": code}}  # fmt: skip
    response = {"status_code": error.status, "request_id": outcome.job, "body": body}
    return {**line, "response": response, "error": None}


def problem_line(line: Line) -> dict[str, Any]:
    """The output line of an input line that is not a request."""
    message = f"line {line.number}: {line.problem}"
    return {
        "id": f"batch_req_line_{line.number}",
        "custom_id": line.custom_id,
        "line": line.number,
        "response": None,
        "error": {"code": "invalid_request", "message": message},
    }
