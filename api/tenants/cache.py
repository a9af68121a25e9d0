"""Key records held in each API process, so checking a key costs no Redis round trip.

A record is loaded on first sight (one GET; two for a key in a team, whose weight it takes) and
kept until a change to it (or to its team) is announced on the keys channel, which every API
process hears within milliseconds: a revoked key is refused everywhere at once. Unknown keys are
remembered too (as None) until a key is generated, so a client repeating a wrong key does not
cost a GET each time. Pub/sub loses what is published
while a process is disconnected: as a safety net the cache compares the store's change counter
every few seconds and drops everything when it moved without a message.
"""

import asyncio
import logging
import time
from contextlib import suppress
from typing import Any

from inferq.api.tenants.principal import Principal
from inferq.broker.connection import Redis
from inferq.broker.errors import BrokerError
from inferq.broker.keys import Keys
from inferq.broker.subscriber import Subscriber
from inferq.broker.tenants import teams, vkeys
from inferq.broker.tenants.vkeys import KeyRecord

log = logging.getLogger("inferq.api")

MISSING: Any = object()  # `cached` of a key not looked up yet
_MAX_ENTRIES = 100_000  # past this the cache starts over (a flood of random keys)


class KeyCache:
    """Key records by hash; `lookup` is a dict read when the key has been seen before."""

    def __init__(self, redis: Redis, listener: Redis, keys: Keys, check_every: float = 5.0):
        self._redis = redis
        self._keys = keys
        self._records: dict[str, Principal | None] = {}
        self._generation = 0  # bumped by every invalidation: a load that raced one is not kept
        self._version: int | None = None
        self._check_every = check_every
        self._subscriber = Subscriber(listener, {keys.vkeys_channel(): self._changed})
        self._task: asyncio.Task[None] | None = None
        self.used: dict[str, float] = {}  # ids of keys used since the last check

    def start(self) -> None:
        """Listen for changes and check the change counter in the background."""
        self._subscriber.start()
        self._task = asyncio.create_task(self._run(), name="key-cache")

    async def stop(self) -> None:
        """Stop listening (after writing when keys were last used)."""
        if self._task:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        await self._subscriber.stop()
        with suppress(BrokerError):
            await self._flush_used()

    def cached(self, token: str) -> Principal | None:
        """The key's principal if this process holds it (None: known to be no key), else
        MISSING."""
        found: Principal | None = self._records.get(token, MISSING)
        return found

    async def lookup(self, token: str) -> Principal | None:
        """The principal of the key whose hash is `token`, or None (unknown or revoked)."""
        try:
            return self._records[token]
        except KeyError:
            pass
        generation = self._generation
        record = await vkeys.load(self._redis, self._keys, token)
        found = None
        if record is not None:
            found = Principal(record, await teams.weight_of(self._redis, self._keys, record))
        if generation == self._generation:
            if len(self._records) >= _MAX_ENTRIES:
                self._records.clear()
            self._records[token] = found
        return found

    def records(self) -> list[KeyRecord]:
        """The records this process holds now."""
        return [p.record for p in self._records.values() if p is not None and p.record]

    def forget(self, token: str) -> None:
        """Drop one record (this process changed it)."""
        self._generation += 1
        self._records.pop(token, None)

    def _changed(self, data: bytes) -> None:
        token = data.decode(errors="replace")
        self._generation += 1
        if token.startswith(teams.TEAM_MESSAGE):  # a team's weight changed: its keys reload
            team = token.removeprefix(teams.TEAM_MESSAGE)
            self._records = {
                t: p for t, p in self._records.items()
                if p is None or p.record is None or p.record.team_id != team
            }  # fmt: skip
            return
        self._records.pop(token, None)
        # A newly generated key may have been looked up (and remembered as unknown) before.
        if any(r is None for r in self._records.values()):
            self._records = {t: r for t, r in self._records.items() if r is not None}

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._check_every)
            try:
                await self.check()
                await self._flush_used()
            except BrokerError as exc:
                log.debug("key cache check failed: %s", exc)

    async def check(self) -> None:
        """Drop everything if the store changed in a way no message announced."""
        now = await vkeys.version(self._redis, self._keys)
        if self._version is not None and now != self._version:
            self._generation += 1
            self._records = {}
        self._version = now

    async def _flush_used(self) -> None:
        now = time.time()
        used, self.used = dict.fromkeys(self.used, now), {}
        await vkeys.mark_used(self._redis, self._keys, used)


def expired(record: KeyRecord) -> bool:
    """True once the key's duration has run out."""
    return record.expires is not None and time.time() >= record.expires
