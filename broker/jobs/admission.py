"""What one API process knows of each queue's depth, so an enqueue far below the queue limit
is one XADD instead of a script that reads the depth first.

Every checked enqueue (the admission script: XLEN, then XADD unless the limit is reached)
tells how deep the queue was. For `FRESH` seconds after that, while that depth plus the jobs
this process has added since stays under half the limit, enqueues skip the check. The limit
can then be passed only if other API processes add more than half of it within those 100 ms;
near the limit every enqueue is checked, so the refusal (429) comes where it always did.
"""

import time
from dataclasses import dataclass, field

# Seconds a checked depth is trusted for.
FRESH = 0.1


@dataclass
class Admission:
    """Per stream: when its depth was last read, and that depth plus our enqueues since."""

    _known: dict[str, tuple[float, int]] = field(default_factory=dict)

    def must_check(self, stream: str, limit: int) -> bool:
        """True when the next enqueue on `stream` must read the depth first."""
        known = self._known.get(stream)
        if known is None:
            return True
        at, depth = known
        return time.monotonic() - at > FRESH or 2 * (depth + 1) >= limit

    def checked(self, stream: str, depth: int) -> None:
        """A checked enqueue found `depth` jobs and added one."""
        self._known[stream] = (time.monotonic(), depth + 1)

    def added(self, stream: str) -> None:
        """An unchecked enqueue added one job."""
        at, depth = self._known[stream]
        self._known[stream] = (at, depth + 1)
