"""Teams (LiteLLM's `team_id`): a name for a set of keys, with a weight in the fair share.

A key's share of a model group is its own `priority` times its team's. A team record is small
JSON under `team:<id>`; every change bumps the keys' change counter and is announced on the keys
channel as `team:<id>`, so API processes drop the records of that team's keys from their caches
and read the new weight on their next request.
"""

import secrets
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from inferq.broker.connection import Redis, is_cluster, translate_errors
from inferq.broker.keys import Keys
from inferq.broker.tenants.vkeys import KeyRecord

TEAM_MESSAGE = "team:"  # prefix of a team's change announcement on the keys channel


class TeamRecord(BaseModel):
    """What Redis holds about one team (LiteLLM's field names, where it has them)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    team_id: str = Field(min_length=1, max_length=200)
    team_alias: str | None = None
    priority: int = Field(default=1, ge=1, le=1000)  # weight of its keys against others
    metadata: dict[str, Any] = Field(default_factory=dict)
    created: float = 0.0


def new_team_id() -> str:
    """A fresh team id (LiteLLM makes UUIDs; any unique string does)."""
    return "team-" + secrets.token_hex(8)


async def save(redis: Redis, keys: Keys, team: TeamRecord) -> None:
    """Store `team` and announce the change to every API process."""
    async with translate_errors():
        pipe = redis.pipeline(transaction=not is_cluster(redis))  # slots differ on a cluster
        pipe.set(keys.team(team.team_id), orjson.dumps(team.model_dump(mode="json")))
        pipe.sadd(keys.teams(), team.team_id)
        pipe.incr(keys.vkeys_version())
        await pipe.execute()
        await redis.publish(keys.vkeys_channel(), TEAM_MESSAGE + team.team_id)


async def load(redis: Redis, keys: Keys, team_id: str) -> TeamRecord | None:
    """The team's record, if any."""
    async with translate_errors():
        raw: Any = await redis.get(keys.team(team_id))
    return None if raw is None else TeamRecord.model_validate_json(raw)


async def load_all(redis: Redis, keys: Keys) -> list[TeamRecord]:
    """Every team."""
    async with translate_errors():
        ids: Any = await redis.smembers(keys.teams())
        if not ids:
            return []
        pipe = redis.pipeline(transaction=False)  # GETs, not MGET: a cluster splits these
        for team_id in sorted(ids):
            pipe.get(keys.team(team_id.decode()))
        raws: Any = await pipe.execute()
    return [TeamRecord.model_validate_json(r) for r in raws if r is not None]


async def delete(redis: Redis, keys: Keys, team_ids: list[str]) -> list[str]:
    """Delete teams (their keys stay, with weight 1 from their team); returns those that
    existed."""
    async with translate_errors():
        pipe = redis.pipeline(transaction=not is_cluster(redis))  # slots differ on a cluster
        for team_id in team_ids:
            pipe.delete(keys.team(team_id))
            pipe.srem(keys.teams(), team_id)
        pipe.incr(keys.vkeys_version())
        done = await pipe.execute()
        for team_id in team_ids:
            await redis.publish(keys.vkeys_channel(), TEAM_MESSAGE + team_id)
    return [t for i, t in enumerate(team_ids) if done[2 * i]]


async def weight_of(redis: Redis, keys: Keys, record: KeyRecord) -> int:
    """The key's weight in the fair share: its priority times its team's (1 without one)."""
    if not record.team_id:
        return record.priority
    team = await load(redis, keys, record.team_id)
    return record.priority * (team.priority if team else 1)
