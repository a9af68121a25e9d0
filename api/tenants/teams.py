"""LiteLLM's team routes, as far as inferq models teams: `/team/new`, `/team/update`,
`/team/info`, `/team/list`, `/team/delete`.

A team names a set of keys (a key's `team_id`) and weighs them in the fair share of each model
group: a key's share is its `priority` times its team's. LiteLLM's other team fields (budgets,
limits, members) are accepted and ignored, so scripts run unchanged; they are not enforced.
Admin only (the auth middleware sees to that).
"""

import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from inferq.api.errors import GatewayError, InvalidRequest
from inferq.api.inference.requests import parse_body, validate
from inferq.api.state import gateway
from inferq.broker.tenants import teams, vkeys
from inferq.broker.tenants.teams import TeamRecord


class TeamSettings(BaseModel):
    """The fields `/team/new` and `/team/update` set."""

    model_config = ConfigDict(extra="ignore")

    team_alias: str | None = Field(default=None, min_length=1, max_length=200)
    priority: int | None = Field(default=None, ge=1, le=1000)
    metadata: dict[str, Any] | None = None


class New(TeamSettings):
    """`POST /team/new`: optionally the team's id (else one is made)."""

    team_id: str | None = Field(default=None, min_length=1, max_length=200)


class Update(TeamSettings):
    """`POST /team/update`: the team and the fields to change."""

    team_id: str = Field(min_length=1, max_length=200)


class Delete(BaseModel):
    """`POST /team/delete`: the teams to delete."""

    model_config = ConfigDict(extra="ignore")
    team_ids: list[str] = Field(min_length=1, max_length=1000)


def _settings(body: TeamSettings) -> dict[str, Any]:
    fields = body.model_dump(exclude_unset=True, exclude={"team_id"})
    return {k: v for k, v in fields.items() if v is not None}


async def _find(request: Request, team_id: str) -> TeamRecord:
    gw = gateway(request)
    team = await teams.load(gw.redis, gw.keys, team_id)
    if team is None:
        raise GatewayError("No such team.", status=404, type="not_found_error", param="team_id")
    return team


async def new(request: Request) -> Response:
    """Make a team."""
    gw = gateway(request)
    body = validate(New, parse_body(await request.body()))
    team_id = body.team_id or teams.new_team_id()
    if await teams.load(gw.redis, gw.keys, team_id) is not None:
        raise InvalidRequest("A team with this team_id exists already.", param="team_id")
    team = TeamRecord(team_id=team_id, created=time.time(), **_settings(body))
    await teams.save(gw.redis, gw.keys, team)
    return JSONResponse(team.model_dump(mode="json"))


async def update(request: Request) -> Response:
    """Change a team's alias, weight or metadata; its keys' new share applies at once."""
    gw = gateway(request)
    body = validate(Update, parse_body(await request.body()))
    team = await _find(request, body.team_id)
    changed = TeamRecord.model_validate({**team.model_dump(), **_settings(body)})
    await teams.save(gw.redis, gw.keys, changed)
    return JSONResponse(changed.model_dump(mode="json"))


async def info(request: Request) -> Response:
    """One team and the ids of its keys."""
    gw = gateway(request)
    team_id = request.query_params.get("team_id")
    if not team_id:
        raise InvalidRequest("name the team: /team/info?team_id=...", param="team_id")
    team = await _find(request, team_id)
    members = [r.key_id for r in await vkeys.load_all(gw.redis, gw.keys) if r.team_id == team_id]
    return JSONResponse(
        {"team_id": team.team_id, "team_info": team.model_dump(mode="json"), "keys": members}
    )


async def list_teams(request: Request) -> Response:
    """Every team."""
    gw = gateway(request)
    found = await teams.load_all(gw.redis, gw.keys)
    return JSONResponse([t.model_dump(mode="json") for t in found])


async def delete(request: Request) -> Response:
    """Delete teams; their keys stay, weighed as if in no team."""
    gw = gateway(request)
    body = validate(Delete, parse_body(await request.body()))
    gone = await teams.delete(gw.redis, gw.keys, body.team_ids)
    if not gone:
        raise GatewayError("No such team.", status=404, type="not_found_error", param="team_ids")
    return JSONResponse({"deleted_teams": gone})


ROUTES: list[tuple[str, Callable[[Request], Awaitable[Response]], str]] = [
    ("/team/new", new, "POST"),
    ("/team/update", update, "POST"),
    ("/team/info", info, "GET"),
    ("/team/list", list_teams, "GET"),
    ("/team/delete", delete, "POST"),
]
