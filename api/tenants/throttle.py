"""Failed authentications per client address: slowed after a few, refused for a while after
many, so guessing keys is slow, while other addresses are served as usual.

Counted in each API process and, on the failure path only, in Redis for every API process
(broker/tenants/limits.py): a failure's shared count is the most of both, so a guesser spread
over several processes gets one allowance between them. Nothing is awaited on the success path;
a process that has not yet seen an address fail refuses it at its first failure there.
"""

import math
import time

from inferq.api.errors import GatewayError

_MAX_ADDRESSES = 50_000


class AuthThrottle:
    """Counts failures per address in fixed windows."""

    def __init__(self, slow_after: int = 5, refuse_after: int = 12, window: float = 60.0):
        self.slow_after = slow_after
        self.refuse_after = refuse_after
        self.window = window
        self._failures: dict[str, tuple[int, float]] = {}  # address → count, window start

    def _count(self, address: str, now: float) -> tuple[int, float]:
        count, start = self._failures.get(address, (0, now))
        if now - start >= self.window:
            return 0, now
        return count, start

    def refused(self, address: str) -> GatewayError | None:
        """The 429 for an address that failed too often in this window, else None."""
        if not self._failures:
            return None
        now = time.monotonic()
        count, start = self._count(address, now)
        if count < self.refuse_after:
            return None
        wait = max(1, math.ceil(start + self.window - now))
        return GatewayError(
            f"Too many failed authentications from this address; retry in {wait} s.",
            status=429,
            type="rate_limit_error",
            code="too_many_auth_failures",
            headers={"retry-after": str(wait)},
        )

    def failed(self, address: str, shared: int | None = None) -> float:
        """Count a failure (`shared`: the count every process agrees on, with this one, when
        Redis answered); returns how long to hold the answer back (seconds)."""
        now = time.monotonic()
        if len(self._failures) >= _MAX_ADDRESSES:
            self._failures = {a: v for a, v in self._failures.items() if now - v[1] < self.window}
        count, start = self._count(address, now)
        count = max(count + 1, shared or 0)
        self._failures[address] = (count, start)
        if count <= self.slow_after:
            return 0.0
        return min(2.0, 0.1 * (count - self.slow_after))
