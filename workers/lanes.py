"""Which lane a worker takes its next jobs from: interactive first; batch within its share of
the slots (so a batch backlog leaves room for interactive requests), and never starved (a
minimum share of starts while both lanes wait).

Pure bookkeeping, no I/O: the worker asks `plan` what to read, hands what it read to `add`, and
starts what `take` returns. One read may bring more than can start at once (a read of both lanes
brings up to `count` from each); those entries are held here, in this worker's pending list,
and start first when a slot frees. A worker that dies holding them has them reclaimed like any
other pending entry.
"""

from collections import deque
from dataclasses import dataclass

from inferq.broker.jobs.consumer import Delivery, EntryKey
from inferq.broker.messages import Lane

# While batch jobs fill their share of the slots, a finishing one must be replaced promptly,
# but the worker can only wait on Redis for new interactive jobs: it looks again this often.
CAPPED_POLL_MS = 25


@dataclass(frozen=True)
class Pull:
    """What to read next: up to `count` jobs from each of `lanes`, waiting at most `block_ms`
    for the first (None: not at all, since held jobs can start now)."""

    lanes: tuple[Lane, ...]
    count: int
    block_ms: int | None


class LaneScheduler:
    """Slots of one deployment shared by the interactive and batch lanes."""

    def __init__(self, batch_slots: int, batch_min_share: float) -> None:
        self.resize(batch_slots, batch_min_share)
        self._credit = 0.0
        self._held: dict[Lane, deque[Delivery]] = {lane: deque() for lane in Lane}
        self._running: dict[Lane, int] = dict.fromkeys(Lane, 0)

    def resize(self, batch_slots: int, batch_min_share: float) -> None:
        """New shares (after a reload); jobs held or running stay where they are."""
        self._batch_slots = batch_slots
        # Each interactive start made while batch jobs wait earns `share / (1 - share)` of a
        # batch start; a whole one goes first, so batch gets at least `share` of the starts.
        self._credit_step = batch_min_share / (1 - batch_min_share)

    @property
    def held(self) -> set[EntryKey]:
        """Entries read but not started (still ours: not to be reclaimed as orphans)."""
        return {d.key for queue in self._held.values() for d in queue}

    def running(self, lane: Lane) -> int:
        """Jobs of `lane` started and not finished."""
        return self._running[lane]

    def _batch_room(self) -> int:
        return self._batch_slots - self._running[Lane.BATCH]

    def plan(self, free: int, block_ms: int) -> Pull | None:
        """What to read with `free` slots: every lane with nothing held (batch only while it
        has room); None when there is nothing to read."""
        room = self._batch_room()
        lanes = [Lane.INTERACTIVE] if not self._held[Lane.INTERACTIVE] else []
        if room > 0 and not self._held[Lane.BATCH]:
            lanes.append(Lane.BATCH)
        if not lanes:
            return None
        startable = bool(self._held[Lane.INTERACTIVE]) or (
            room > 0 and bool(self._held[Lane.BATCH])
        )
        if startable:
            wait: int | None = None
        elif room <= 0:
            wait = min(block_ms, CAPPED_POLL_MS)
        else:
            wait = block_ms
        count = min(free, room) if lanes == [Lane.BATCH] else free
        return Pull(tuple(lanes), max(count, 1), wait)

    def add(self, deliveries: list[Delivery]) -> None:
        """Hold what was read (or reclaimed) until `take` starts it."""
        for delivery in deliveries:
            self._held[delivery.lane].append(delivery)

    def take(self, free: int) -> list[Delivery]:
        """The held jobs to start now in `free` slots, in order: a batch job owed by the
        minimum share, interactive jobs, then batch jobs while batch has room."""
        started: list[Delivery] = []
        interactive, batch = self._held[Lane.INTERACTIVE], self._held[Lane.BATCH]
        while len(started) < free:
            batch_may = bool(batch) and self._batch_room() > 0
            if batch_may and (not interactive or self._credit >= 1 - 1e-9):
                if interactive:
                    self._credit -= 1
                delivery = batch.popleft()
            elif interactive:
                if batch_may:  # batch waits while this one goes first
                    self._credit = min(self._credit + self._credit_step, 1.0)
                delivery = interactive.popleft()
            else:
                break
            self._running[delivery.lane] += 1
            started.append(delivery)
        return started

    def finished(self, lane: Lane) -> None:
        """A job of `lane` ended (acknowledged, moved or abandoned): its slot is free."""
        self._running[lane] -= 1
