"""Stored Responses API responses (`store: true`), so `previous_response_id` continues a
conversation on any API process, and `GET`/`DELETE /v1/responses/{id}` find them.

One JSON string per response, with a TTL: the Response object as the client saw it, plus the
conversation it ended, as chat messages (the previous turns, this turn's input and its output),
which is what the next turn sends the backend.
"""

import re
from typing import Any

import orjson
from pydantic import BaseModel

from inferq.broker.connection import Redis, translate_errors
from inferq.broker.keys import Keys

# A response id inferq made (`resp_` + a job id); anything else names no stored response and
# never reaches a key name.
RESPONSE_ID = re.compile(r"^resp_[0-9a-f]{24}$")
# How long a stored response is kept: OpenAI keeps them 30 days; a gateway's Redis is smaller.
RESPONSE_TTL = 7 * 24 * 3600


class StoredResponse(BaseModel):
    """One stored response and the conversation up to and including it."""

    response: dict[str, Any]
    messages: list[dict[str, Any]]
    # The hash of the virtual key that made it (None: the master key): another key neither
    # reads it nor continues from it.
    owner: str | None = None


async def save_response(
    redis: Redis, keys: Keys, stored: StoredResponse, ttl: int = RESPONSE_TTL
) -> None:
    """Keep `stored` for `ttl` seconds under its response id."""
    key = keys.response(str(stored.response["id"]))
    async with translate_errors():
        await redis.set(key, orjson.dumps(stored.model_dump(mode="json")), ex=ttl)


async def load_response(redis: Redis, keys: Keys, response_id: str) -> StoredResponse | None:
    """A stored response, or None (unknown, expired, deleted, or not an id of ours)."""
    if not RESPONSE_ID.match(response_id):
        return None
    async with translate_errors():
        raw = await redis.get(keys.response(response_id))
    return StoredResponse.model_validate_json(raw) if raw else None


async def delete_response(redis: Redis, keys: Keys, response_id: str) -> bool:
    """Forget a stored response; False if there was none."""
    if not RESPONSE_ID.match(response_id):
        return False
    async with translate_errors():
        return bool(await redis.delete(keys.response(response_id)))
