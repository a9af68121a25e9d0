"""Lua scripts run by SHA (EVALSHA), loaded on first use on each server."""

import hashlib
from typing import Any

from redis.exceptions import NoScriptError

from inferq.broker.connection import Redis


class LuaScript:
    """A script sent once per server and then called by its SHA1."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, redis: Redis, keys: list[str], args: list[Any]) -> Any:
        """Run the script; reload it if the server forgot it (restart, SCRIPT FLUSH)."""
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await redis.eval(self.source, len(keys), *keys, *args)

    def queue(self, pipe: Any, keys: list[str], args: list[Any]) -> None:
        """Queue the script on a pipeline (by its source: a NOSCRIPT inside a pipeline could
        not be retried; the server caches the script anyway)."""
        pipe.eval(self.source, len(keys), *keys, *args)
