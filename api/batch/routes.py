"""The OpenAI Batch API: `/v1/files` for inputs and outputs, `/v1/batches` to run them.

The routes only store and read records; `api/batch/driver.py` runs the batches.
"""

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from inferq.api.errors import GatewayError, InvalidRequest
from inferq.api.inference.requests import parse_body, validate
from inferq.api.state import Gateway, gateway
from inferq.api.tenants.principal import principal_of
from inferq.broker.batch.batches import (
    BATCH_ID,
    BatchStatus,
    active_batches,
    create_batch,
    get_batch,
    list_batches,
    transition,
)
from inferq.broker.batch.batchfile import KINDS
from inferq.broker.batch.files import (
    FILE_ID,
    FileObject,
    create_file,
    delete_file,
    file_content,
    get_file,
    list_files,
)
from inferq.broker.tenants.owners import drop_owner, owners_of, set_owner

_WINDOW = re.compile(r"^(\d{1,5})([mh])$")
MAX_WINDOW_S = 7 * 24 * 3600  # OpenAI takes 24h only; inferq up to a week


class NoSuchObject(GatewayError):
    """An id that names no file or batch."""

    status = 404
    type = "invalid_request_error"


class BatchCreate(BaseModel):
    """The body of `POST /v1/batches`."""

    model_config = ConfigDict(extra="forbid")
    input_file_id: str = Field(min_length=1)
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None


def _json(model: BaseModel) -> JSONResponse:
    # Fields without a value are left out (OpenAI's schemas type them as strings or objects,
    # not as nullable: `status_details: null` fails a strict client).
    return JSONResponse(model.model_dump(mode="json", exclude_none=True))


def _page(items: list[Any], more: bool) -> JSONResponse:
    data = [i.model_dump(mode="json", exclude_none=True) for i in items]
    page: dict[str, Any] = {"object": "list", "data": data, "has_more": more}
    if data:  # the spec's first_id/last_id are strings: an empty page has none to give
        page["first_id"], page["last_id"] = data[0]["id"], data[-1]["id"]
    return JSONResponse(page)


def _limit(request: Request, default: int = 20) -> int:
    raw = request.query_params.get("limit", str(default))
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 5) or not 1 <= int(raw) <= 10_000:
        raise InvalidRequest("limit must be an integer from 1 to 10000", param="limit")
    return int(raw)


def _file_id(request: Request) -> str:
    """The path's file id, if it can name one (else 404 here, before it reaches a key name)."""
    file_id: str = request.path_params["file_id"]
    if not FILE_ID.match(file_id):
        raise NoSuchObject(f"No such File object: {file_id[:100]}", param="file_id")
    return file_id


def _batch_id(request: Request) -> str:
    """The path's batch id, if it can name one."""
    batch_id: str = request.path_params["batch_id"]
    if not BATCH_ID.match(batch_id):
        raise NoSuchObject(f"No such Batch object: {batch_id[:100]}", param="batch_id")
    return batch_id


def _owner_name(object_id: str) -> str:
    """The object whose owner owns `object_id`: a batch's output files are the batch's."""
    for suffix in ("-output", "-errors"):
        if object_id.endswith(suffix):
            return "batch_" + object_id.removeprefix("file-").removesuffix(suffix)
    return object_id


async def _visible(request: Request, gw: Gateway, object_ids: list[str]) -> list[bool]:
    """Which objects the request's key may see: all for admins, its own for other keys."""
    me = principal_of(request.scope)
    if me.admin:
        return [True] * len(object_ids)
    owners = await owners_of(gw.redis, gw.keys, [_owner_name(i) for i in object_ids])
    return [me.may_see(o) for o in owners]


async def _mine(request: Request, gw: Gateway, object_id: str, kind: str, param: str) -> None:
    """404 (as for an id that does not exist) when the object is another key's."""
    if not (await _visible(request, gw, [object_id]))[0]:
        raise NoSuchObject(f"No such {kind} object: {object_id}", param=param)


async def _claim(request: Request, gw: Gateway, object_id: str) -> None:
    token = principal_of(request.scope).token
    if token is not None:
        await set_owner(gw.redis, gw.keys, object_id, token)


def _listing_limit(request: Request, limit: int) -> int:
    """How many to read before keeping a key's own (admins read just what they asked for)."""
    return limit if principal_of(request.scope).admin else 10_000


# ---- files ----------------------------------------------------------------------------------


async def upload_file(request: Request) -> Response:
    """`POST /v1/files`: multipart `file` and `purpose` (only `batch` is served)."""
    gw = gateway(request)
    form = await request.form()
    purpose = form.get("purpose")
    upload = form.get("file")
    if purpose != "batch":
        raise InvalidRequest(
            f"purpose must be 'batch' (inferq keeps files for the Batch API), not {purpose!r}",
            param="purpose",
        )
    if not isinstance(upload, UploadFile):
        raise InvalidRequest("send the file as the multipart field 'file'", param="file")
    content = await upload.read()
    made = await create_file(gw.redis, gw.keys, filename=upload.filename or "upload.jsonl",
                             purpose="batch", content=content)  # fmt: skip
    await _claim(request, gw, made.id)
    return _json(made)


async def list_all_files(request: Request) -> Response:
    """`GET /v1/files`, newest first; `purpose`, `limit` and `after` as OpenAI takes them."""
    gw = gateway(request)
    limit = _limit(request, 10_000)
    files, more = await list_files(
        gw.redis,
        gw.keys,
        purpose=request.query_params.get("purpose"),
        limit=_listing_limit(request, limit),
        after=request.query_params.get("after"),
    )
    shown: list[FileObject] = [
        f
        for f, ok in zip(files, await _visible(request, gw, [f.id for f in files]), strict=True)
        if ok
    ]
    return _page(shown[:limit], more or len(shown) > limit)


async def retrieve_file(request: Request) -> Response:
    """`GET /v1/files/{file_id}`."""
    gw = gateway(request)
    file_id = _file_id(request)
    await _mine(request, gw, file_id, "File", "file_id")
    found = await get_file(gw.redis, gw.keys, file_id)
    if found is None:
        raise NoSuchObject(f"No such File object: {file_id}", param="file_id")
    return _json(found)


async def retrieve_file_content(request: Request) -> Response:
    """`GET /v1/files/{file_id}/content`: the bytes (JSONL for batch files), served as
    `application/json` as OpenAI's spec documents it."""
    gw = gateway(request)
    file_id = _file_id(request)
    await _mine(request, gw, file_id, "File", "file_id")
    content = await file_content(gw.redis, gw.keys, file_id)
    if content is None:
        raise NoSuchObject(f"No such File object: {file_id}", param="file_id")
    return Response(content, media_type="application/json")


async def remove_file(request: Request) -> Response:
    """`DELETE /v1/files/{file_id}`."""
    gw = gateway(request)
    file_id = _file_id(request)
    await _mine(request, gw, file_id, "File", "file_id")
    for batch_id in await active_batches(gw.redis, gw.keys):
        batch = await get_batch(gw.redis, gw.keys, batch_id)
        if batch is not None and batch.input_file_id == file_id:
            raise GatewayError(
                f"File {file_id} is the input of {batch_id}, which is {batch.status.value}; "
                "delete it once the batch has ended.",
                status=409,
                type="invalid_request_error",
            )
    if not await delete_file(gw.redis, gw.keys, file_id):
        raise NoSuchObject(f"No such File object: {file_id}", param="file_id")
    await drop_owner(gw.redis, gw.keys, file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


# ---- batches --------------------------------------------------------------------------------


async def create(request: Request) -> Response:
    """`POST /v1/batches`: check the request, record the batch; a driver takes it from there."""
    gw = gateway(request)
    record = principal_of(request.scope).record
    if record is not None:
        gw.guard.check_budget(record)  # 429 once its budget for the period is spent
    body = validate(BatchCreate, parse_body(await request.body()))
    if body.endpoint not in KINDS:
        raise InvalidRequest(
            f"endpoint must be one of {', '.join(KINDS)}, not {body.endpoint!r}", param="endpoint"
        )
    window = _WINDOW.match(body.completion_window)
    if window is None or int(window.group(1)) == 0:
        raise InvalidRequest(
            "completion_window must be like '24h' (hours or minutes)", param="completion_window"
        )
    seconds = int(window.group(1)) * (3600 if window.group(2) == "h" else 60)
    if seconds > MAX_WINDOW_S:
        raise InvalidRequest("completion_window may be at most 168h", param="completion_window")
    found = None
    if FILE_ID.match(body.input_file_id) and (await _visible(request, gw, [body.input_file_id]))[0]:
        found = await get_file(gw.redis, gw.keys, body.input_file_id)
    if found is None:
        raise InvalidRequest(f"No such File object: {body.input_file_id}", param="input_file_id")
    if found.purpose != "batch":
        raise InvalidRequest(
            f"file {found.id} has purpose {found.purpose!r}, not 'batch'", param="input_file_id"
        )
    batch = await create_batch(gw.redis, gw.keys, endpoint=body.endpoint,
                               input_file_id=body.input_file_id,
                               completion_window=body.completion_window, window_seconds=seconds,
                               metadata=body.metadata)  # fmt: skip
    await _claim(request, gw, batch.id)
    return _json(batch)


async def retrieve(request: Request) -> Response:
    """`GET /v1/batches/{batch_id}`."""
    gw = gateway(request)
    batch_id = _batch_id(request)
    await _mine(request, gw, batch_id, "Batch", "batch_id")
    batch = await get_batch(gw.redis, gw.keys, batch_id)
    if batch is None:
        raise NoSuchObject(f"No such Batch object: {batch_id}", param="batch_id")
    return _json(batch)


async def list_all(request: Request) -> Response:
    """`GET /v1/batches`, newest first, paginated with `limit` and `after`."""
    gw = gateway(request)
    limit = _limit(request)
    batches, more = await list_batches(
        gw.redis,
        gw.keys,
        limit=_listing_limit(request, limit),
        after=request.query_params.get("after"),
    )
    visible = await _visible(request, gw, [b.id for b in batches])
    shown = [b for b, ok in zip(batches, visible, strict=True) if ok]
    return _page(shown[:limit], more or len(shown) > limit)


async def cancel(request: Request) -> Response:
    """`POST /v1/batches/{batch_id}/cancel`: requests not yet run are dropped; the batch ends
    `cancelled` with the results of those that ran."""
    gw = gateway(request)
    batch_id = _batch_id(request)
    await _mine(request, gw, batch_id, "Batch", "batch_id")
    moved = await transition(
        gw.redis,
        gw.keys,
        batch_id,
        BatchStatus.CANCELLING,
        allowed_from={BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS},
    )
    batch = await get_batch(gw.redis, gw.keys, batch_id)
    if batch is None:
        raise NoSuchObject(f"No such Batch object: {batch_id}", param="batch_id")
    if not moved and batch.status not in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
        raise GatewayError(
            f"Cannot cancel a batch that is {batch.status.value}.",
            status=409,
            type="invalid_request_error",
        )
    return _json(batch)
