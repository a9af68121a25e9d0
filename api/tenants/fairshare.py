"""A fair share of each model group between keys, by admission: each key may have only a few
jobs more than the group has slots queued or running at once (times its weight: its priority
times its team's); the rest of its requests wait here, in the API, in arrival order.

A group's stream is one FIFO queue, served in arrival order whoever asked: a key that sends
2,000 requests at once would put 2,000 jobs ahead of everyone else's. Held back here, the
stream holds at most a few of any key's jobs, so another key's request starts after a few
jobs, not after the backlog; and since each key keeps the group's slots busy plus a few
queued, the backend stays as busy as before while one key is alone.

Counted per API process, with nothing awaited on the path of a key under its share (a dict
update). Across API processes: each learns once a second (from the views they all write for
`inferq status`, broker/tenants/shares.py) on how many processes a key has work on a group, and
admits only its part of the key's share there, so a key spread over N processes still holds one
share of the stream (for up to a second after it spreads, up to N). Requests waiting here
count against the group's `queue_limit` like jobs in the stream (429 `queue_full` past it).
The master key's requests are not held back: they are the operator's own.
"""

import asyncio
from collections import deque
from dataclasses import dataclass

from inferq.api.errors import GatewayError, GatewayTimeout
from inferq.broker.tenants.shares import fair_cap


@dataclass
class Ticket:
    """A request's place in a group's share; `leave` it exactly once when the job ends."""

    group: str
    key: str


class FairShare:
    """Jobs in flight per (group, key) in this process, and the requests waiting for room."""

    def __init__(self) -> None:
        self._flight: dict[tuple[str, str], int] = {}
        self._waiting: dict[tuple[str, str], deque[asyncio.Future[None]]] = {}
        self._group_waiting: dict[str, int] = {}
        self._basis: dict[tuple[str, str], tuple[int, int]] = {}  # slots, weight (last seen)
        self._spread: dict[tuple[str, str], int] = {}  # API processes carrying a key's work

    def cap(self, group: str, key: str) -> int:
        """Jobs the key may have in flight on the group through this process now: its share
        divided between the processes that carry its work there."""
        slots, weight = self._basis.get((group, key), (1, 1))
        return fair_cap(slots, weight, self._spread.get((group, key), 1))

    def set_spread(self, spread: dict[tuple[str, str], int]) -> None:
        """On how many API processes each (group, key) has work now (missing: only here);
        requests waiting for a share that grew are let in."""
        self._spread = spread
        for at in list(self._waiting):
            self._wake(at, self._flight.get(at, 0))

    async def enter(
        self, group: str, key: str, *, slots: int, weight: int, wait_s: float, limit: int | None
    ) -> Ticket:
        """A place for one job of `key` on `group`, waiting (at most `wait_s` seconds) while
        the key has its share in flight; 429 when `limit` requests wait for the group."""
        ticket = Ticket(group, key)
        at = (group, key)
        self._basis[at] = (slots, weight)
        flight = self._flight.get(at, 0)
        if flight < self.cap(group, key) and not self._waiting.get(at):
            self._flight[at] = flight + 1
            return ticket
        held = self._group_waiting.get(group, 0)
        if limit is not None and held >= limit:
            raise GatewayError(
                f"Model group {group} is at capacity ({held} requests waiting); retry shortly.",
                status=429, type="rate_limit_error", code="queue_full",
                headers={"retry-after": "1"},
            )  # fmt: skip
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(at, deque()).append(waiter)
        self._group_waiting[group] = held + 1
        try:
            async with asyncio.timeout(max(wait_s, 0.0)):
                await waiter
        except TimeoutError:
            self._drop(at, waiter)  # no longer waiting (`inferq status` counts the line)
            raise GatewayTimeout(
                f"No answer for model group {group} before the request's deadline "
                "(this key's earlier requests still hold its share of the group).",
                code="timeout",
            ) from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._leave(at)  # admitted as it was cancelled: give it back
            else:
                self._drop(at, waiter)
            raise
        finally:
            self._group_waiting[group] -= 1
        return ticket

    def leave(self, ticket: Ticket) -> None:
        """The ticket's job ended: its room goes to the key's next waiting request."""
        self._leave((ticket.group, ticket.key))

    def _leave(self, at: tuple[str, str]) -> None:
        self._wake(at, self._flight.get(at, 1) - 1)

    def _wake(self, at: tuple[str, str], flight: int) -> None:
        """Admit the key's waiting requests while it has room; `flight` is its count now."""
        waiting = self._waiting.get(at)
        cap = self.cap(*at)
        while waiting and flight < cap:
            waiter = waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                flight += 1
        if waiting is not None and not waiting:
            del self._waiting[at]
        if flight > 0:
            self._flight[at] = flight
        else:
            self._flight.pop(at, None)
            if at not in self._waiting:
                self._basis.pop(at, None)

    def _drop(self, at: tuple[str, str], waiter: asyncio.Future[None]) -> None:
        waiting = self._waiting.get(at)
        if waiting is not None:
            with_out = deque(w for w in waiting if w is not waiter)
            if with_out:
                self._waiting[at] = with_out
            else:
                del self._waiting[at]

    def snapshot(self) -> dict[str, dict[str, list[int]]]:
        """{group: {key id: [jobs in flight, requests waiting]}} in this process."""
        view: dict[str, dict[str, list[int]]] = {}
        for (group, key), flight in self._flight.items():
            view.setdefault(group, {})[key] = [flight, len(self._waiting.get((group, key), ()))]
        return view
