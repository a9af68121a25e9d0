"""The deployment workers of one process, kept in line with the config as it is reloaded."""

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from inferq.broker.connection import Redis
from inferq.config import Deployment, GatewayConfig
from inferq.workers.providers import provider_for
from inferq.workers.transport import BackendHTTP
from inferq.workers.worker import DeploymentWorker

log = logging.getLogger("inferq.worker")


@dataclass(frozen=True)
class Selection:
    """What an operator asked this process to serve: `--group` (repeatable) or `--deployment`;
    neither means every group, including groups a reload adds."""

    groups: tuple[str, ...] = ()
    deployment: str | None = None

    def select(self, config: GatewayConfig) -> list[Deployment]:
        """The deployments of `config` this process serves; ValueError names what is unknown."""
        if self.deployment:
            dep = config.deployment(self.deployment)
            if dep is None:
                known = ", ".join(d.id for deps in config.groups.values() for d in deps)
                raise ValueError(f"no deployment {self.deployment!r} (known: {known})")
            if self.groups and dep.group not in self.groups:
                raise ValueError(f"deployment {self.deployment!r} belongs to group {dep.group!r}")
            return [dep]
        if self.groups:
            unknown = [g for g in self.groups if g not in config.groups]
            if unknown:
                known = ", ".join(config.groups)
                raise ValueError(f"no model group {', '.join(unknown)} (known: {known})")
            return [d for g in self.groups for d in config.groups[g]]
        return [d for deps in config.groups.values() for d in deps]


@dataclass
class _Running:
    worker: DeploymentWorker
    stop: asyncio.Event
    task: asyncio.Task[None]


class WorkerPool:
    """Starts a DeploymentWorker per servable deployment; on reload, starts the new ones,
    drains the removed ones and hands changed settings to the rest."""

    def __init__(
        self,
        redis: Redis,
        http: BackendHTTP,
        selection: Selection,
        *,
        slots: int | None = None,
        is_cancelled: Callable[[str], bool] | None = None,
        crash_at: str | None = None,
    ) -> None:
        self._redis = redis
        self._crash_at = crash_at  # fault tests only (config.runtime)
        self._http = http
        self._selection = selection
        self._slots = slots
        self._is_cancelled = is_cancelled
        self._running: dict[str, _Running] = {}
        self._draining: list[_Running] = []  # removed by a reload, finishing their jobs
        self._crashed = asyncio.Event()

    @property
    def workers(self) -> list[DeploymentWorker]:
        """The workers serving now (not those draining after a reload removed them)."""
        return [r.worker for r in self._running.values()]

    def apply(self, config: GatewayConfig) -> None:
        """Serve `config`'s selected deployments; raises ValueError if none can be served."""
        try:
            selected = self._selection.select(config)
        except ValueError as exc:
            if not self._running:
                raise
            log.warning("after the reload this process serves nothing: %s", exc)
            selected = []
        wanted: dict[str, Deployment] = {}
        for dep in selected:
            reason = dep.unavailable_reason
            if reason:
                log.warning("deployment %s unavailable: %s", dep.id, reason)
            else:
                wanted[dep.id] = dep
        if not wanted and not self._running:
            raise ValueError("none of the selected deployments can be served")
        for dep_id, running in list(self._running.items()):
            moved = dep_id in wanted and wanted[dep_id].group != running.worker.deployment.group
            if dep_id not in wanted or moved:
                log.info("deployment %s is no longer served here as it was; draining it", dep_id)
                running.stop.set()
                self._draining.append(self._running.pop(dep_id))
        for dep_id, dep in wanted.items():
            current = self._running.get(dep_id)
            if current is not None:
                provider = current.worker.provider
                if dep != current.worker.deployment:
                    provider = provider_for(dep, self._http)
                current.worker.reconfigure(config, dep, provider)
            else:
                self._start(config, dep)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then let every worker drain. A worker that dies of a bug
        stops the process (with an error), so its supervisor restarts it whole."""
        stopping = asyncio.create_task(stop.wait())
        crashing = asyncio.create_task(self._crashed.wait())
        await asyncio.wait({stopping, crashing}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        crashing.cancel()
        every = [*self._running.values(), *self._draining]
        for running in every:
            running.stop.set()
        await asyncio.gather(*(r.task for r in every), return_exceptions=True)
        if self._crashed.is_set():
            raise RuntimeError("a deployment worker stopped on an error (see above)")

    def cancel(self, job_id: str) -> None:
        """A client went away: abort its job wherever it runs in this process."""
        for running in [*self._running.values(), *self._draining]:
            running.worker.cancel(job_id)

    def _start(self, config: GatewayConfig, dep: Deployment) -> None:
        worker = DeploymentWorker(
            dep,
            config,
            self._redis,
            provider_for(dep, self._http),
            is_cancelled=self._is_cancelled,
            slots=self._slots,
            crash_at=self._crash_at,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop), name=f"worker-{dep.id}")
        task.add_done_callback(functools.partial(self._finished, dep.id))
        self._running[dep.id] = _Running(worker, stop, task)

    def _finished(self, dep_id: str, task: "asyncio.Task[None]") -> None:
        running = self._running.get(dep_id)
        if running is not None and running.task is task:
            del self._running[dep_id]
        self._draining = [r for r in self._draining if r.task is not task]
        if not task.cancelled() and task.exception() is not None:
            log.error("worker for %s stopped on an error", dep_id, exc_info=task.exception())
            self._crashed.set()
