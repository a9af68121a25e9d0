"""Spend limits per model group or provider, per UTC day or month.

A background view sums the usage totals every two seconds. Crossing a budget's warning share
logs a warning and POSTs an alert to `inferq_settings.budget_webhook` (once per budget and
period, across all API processes); crossing its limit takes the group out of service: its
alias chains fall back (to a local model, say), and a request with nowhere left to go gets 429.
"""

import asyncio
import datetime as dt
import logging
from contextlib import suppress

from inferq.broker.connection import Redis
from inferq.broker.errors import BrokerError
from inferq.broker.keys import Keys
from inferq.broker.ops.usage import first_warning, spend
from inferq.config import GatewayConfig
from inferq.config.model import Budget

log = logging.getLogger("inferq.api")


def period_days(period: str, today: dt.date) -> list[str]:
    """The UTC days of the current day or month so far."""
    if period == "day":
        return [str(today)]
    return [str(today.replace(day=d)) for d in range(1, today.day + 1)]


class BudgetView:
    """Which groups are over budget now, refreshed in the background."""

    def __init__(
        self, config: GatewayConfig, redis: Redis, keys: Keys, interval: float = 2.0
    ) -> None:
        self._config = config
        self._redis = redis
        self._keys = keys
        self._interval = interval
        self.blocked: dict[str, str] = {}  # group → why
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Refresh in the background (only when budgets are configured)."""
        if self._config.budgets and self._task is None:
            self._task = asyncio.create_task(self._run(), name="budgets")

    def reconfigure(self, config: GatewayConfig) -> None:
        """Follow a reloaded config: budgets added start being watched, removed ones unblock."""
        self._config = config
        if not config.budgets:
            self.blocked = {}  # else the next refresh, within seconds, recomputes it
        self.start()

    async def stop(self) -> None:
        """Stop refreshing."""
        if self._task:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def refresh(self) -> None:
        """Sum spend for every budget; update the blocked groups; warn once per period."""
        today = dt.datetime.now(dt.UTC).date()
        over: list[tuple[Budget, float]] = []
        for budget in self._config.budgets:
            spent = await spend(
                self._redis,
                self._keys,
                budget.scope,
                budget.name,
                period_days(budget.period, today),
            )
            if spent >= budget.limit:
                over.append((budget, spent))
            if spent >= budget.limit * budget.warn_at:
                await self._warn(budget, spent, today)
        blocked: dict[str, str] = {}
        for budget, spent in over:
            why = (
                f"{budget.scope} {budget.name} spent ${spent:.4f} "
                f"of its ${budget.limit:g} budget per {budget.period}"
            )
            for group in self._config.groups:
                if self._covers(budget, group):
                    blocked[group] = why
        self.blocked = blocked

    def _covers(self, budget: Budget, group: str) -> bool:
        if budget.scope == "group":
            return group == budget.name
        return all(d.provider.value == budget.name for d in self._config.groups[group])

    async def _warn(self, budget: Budget, spent: float, today: dt.date) -> None:
        """One alert per threshold crossed (the warning share, the limit) per period."""
        period = str(today) if budget.period == "day" else today.strftime("%Y-%m")
        for exceeded in (False, True):
            if exceeded and spent < budget.limit:
                break
            marker = f"{period}:{budget.scope}:{budget.name}:{'limit' if exceeded else 'warn'}"
            if not await first_warning(self._redis, self._keys, marker, 40 * 86400):
                continue
            alert = {
                "scope": budget.scope, "name": budget.name, "period": budget.period,
                "spent_usd": round(spent, 6), "limit_usd": budget.limit, "exceeded": exceeded,
            }  # fmt: skip
            log.warning("budget alert: %s", alert)
            await self._post(alert)

    async def _post(self, alert: dict[str, object]) -> None:
        if not self._config.budget_webhook:
            return
        # Imported here: only this alert needs an HTTP client in the API process, and httpx
        # (with what it pulls in) would add about 2 MB to every idle API process (issue 15).
        import httpx

        try:
            async with httpx.AsyncClient(timeout=5) as http:
                await http.post(self._config.budget_webhook, json=alert)
        except httpx.HTTPError as exc:
            log.warning("budget webhook failed: %s", type(exc).__name__)

    async def _run(self) -> None:
        while True:
            with suppress(BrokerError):
                await self.refresh()
            await asyncio.sleep(self._interval)
