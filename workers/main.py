"""A worker process: every selected deployment of a group, served from one asyncio loop."""

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from inferq.broker.connection import connect
from inferq.broker.jobs.cancel import CancelListener
from inferq.broker.keys import Keys
from inferq.broker.ops.control import Reloader
from inferq.broker.subscriber import Subscriber
from inferq.config import GatewayConfig
from inferq.config.reload import ConfigFile
from inferq.workers.pool import Selection, WorkerPool
from inferq.workers.transport import BackendHTTP

log = logging.getLogger("inferq.worker")


async def serve(
    config: GatewayConfig,
    redis_url: str,
    selection: Selection,
    stop: asyncio.Event,
    *,
    config_file: ConfigFile | None = None,
    slots: int | None = None,
    crash_at: str | None = None,
) -> None:
    """Serve the selected deployments until `stop` is set, following reloads of `config_file`
    (SIGHUP, a change of the file, `inferq reload`)."""
    keys = Keys(config.fabric.key_prefix)
    redis = connect(redis_url, max_connections=256, blocking_reads=True)
    listener = connect(redis_url, max_connections=2, blocking_reads=True)
    # The pool's slots bound concurrency; the transport must not bound it again below them.
    async with BackendHTTP(max_connections=0) as http:

        def on_cancel(job_id: str) -> None:
            pool.cancel(job_id)

        cancels = CancelListener(on_cancel)
        pool = WorkerPool(
            redis,
            http,
            selection,
            slots=slots,
            is_cancelled=cancels.__contains__,
            crash_at=crash_at,
        )
        handlers = {keys.cancel(): cancels.heard}
        reloader = None
        if config_file is not None:
            reloader = Reloader(
                redis,
                keys,
                config_file,
                config,
                apply=_apply(pool),
                process=_process_name(selection),
            )
            handlers.update(reloader.handlers())
        subscriber = Subscriber(listener, handlers)
        try:
            pool.apply(config)
            subscriber.start()
            if reloader:
                reloader.start()
            await pool.run(stop)
        finally:
            if reloader:
                await reloader.stop()
            await subscriber.stop()
            await listener.aclose()
            await redis.aclose()


def _apply(pool: WorkerPool) -> Callable[[GatewayConfig], Awaitable[None]]:
    async def apply(config: GatewayConfig) -> None:
        pool.apply(config)

    return apply


def _process_name(selection: Selection) -> str:
    what = selection.deployment or ",".join(selection.groups) or "all groups"
    return f"worker {socket.gethostname()}:{os.getpid()} ({what})"


def run(
    config: GatewayConfig,
    redis_url: str,
    selection: Selection,
    *,
    config_path: Path | None = None,
    slots: int | None = None,
    crash_at: str | None = None,
) -> None:
    """Blocking entry point: serve until SIGTERM or SIGINT, then drain gracefully."""
    selection.select(config)  # fail fast, before any connection, on an unknown name

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        config_file = ConfigFile(config_path) if config_path else None
        await serve(
            config,
            redis_url,
            selection,
            stop,
            config_file=config_file,
            slots=slots,
            crash_at=crash_at,
        )

    _run_loop(main())


def _run_loop(coro: "asyncio.Future[None] | object") -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]
