"""Files for the Batch API (`/v1/files`): batch inputs clients upload, outputs inferq writes.

A file is one Redis hash holding its metadata and its bytes. Batch files are bounded
(`inferq_settings.max_file_bytes`, 200 MB like OpenAI's), and a file lives until it is deleted.
"""

import re
import secrets
import time
from typing import Any, Literal

from pydantic import BaseModel

from inferq.broker.connection import Redis, is_cluster, translate_errors
from inferq.broker.keys import Keys


class FileObject(BaseModel):
    """A file as OpenAI describes one."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    status_details: str | None = None


FILE_ID = re.compile(r"^file-[0-9a-f]{24}(-output|-errors)?$")


async def create_file(
    redis: Redis,
    keys: Keys,
    *,
    filename: str,
    purpose: str,
    content: bytes,
    file_id: str | None = None,
) -> FileObject:
    """Store `content` as a new file (or as `file_id`, replacing it: a batch's output files
    are named after the batch, so finalizing twice writes them twice, not two of each)."""
    meta = FileObject(
        id=file_id or f"file-{secrets.token_hex(12)}",
        bytes=len(content),
        created_at=int(time.time()),
        filename=filename,
        purpose=purpose,
    )
    async with translate_errors():
        # One MULTI on one server; on a cluster (two slots) the file, then its index entry.
        pipe = redis.pipeline(transaction=not is_cluster(redis))
        pipe.hset(keys.file(meta.id), mapping={"meta": meta.model_dump_json(), "content": content})
        pipe.zadd(keys.files(), {meta.id: meta.created_at})
        await pipe.execute()
    return meta


async def get_file(redis: Redis, keys: Keys, file_id: str) -> FileObject | None:
    """A file's metadata, or None."""
    async with translate_errors():
        raw = await redis.hget(keys.file(file_id), "meta")
    return FileObject.model_validate_json(raw) if raw else None


async def file_content(redis: Redis, keys: Keys, file_id: str) -> bytes | None:
    """A file's bytes, or None."""
    async with translate_errors():
        raw: Any = await redis.hget(keys.file(file_id), "content")
    return bytes(raw) if raw is not None else None


async def delete_file(redis: Redis, keys: Keys, file_id: str) -> bool:
    """Delete a file; False if there was none."""
    async with translate_errors():
        pipe = redis.pipeline(transaction=not is_cluster(redis))
        pipe.delete(keys.file(file_id))
        pipe.zrem(keys.files(), file_id)
        deleted, _ = await pipe.execute()
    return bool(deleted)


async def list_files(
    redis: Redis, keys: Keys, *, purpose: str | None, limit: int, after: str | None
) -> tuple[list[FileObject], bool]:
    """Files newest first, after the file `after`; and whether more follow."""
    async with translate_errors():
        ids: list[Any] = await redis.zrevrange(keys.files(), 0, -1)
        names = [i.decode() for i in ids]
        if after in names:
            names = names[names.index(after) + 1 :]
        found: list[FileObject] = []
        for start in range(0, len(names), 100):
            chunk = names[start : start + 100]
            pipe = redis.pipeline(transaction=False)
            for name in chunk:
                pipe.hget(keys.file(name), "meta")
            for raw in await pipe.execute():
                if raw:
                    meta = FileObject.model_validate_json(raw)
                    if purpose is None or meta.purpose == purpose:
                        found.append(meta)
            if len(found) > limit:
                break
    return found[:limit], len(found) > limit
