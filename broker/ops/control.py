"""The control plane: config reloads, asked for by SIGHUP, a file change or `inferq reload`.

`inferq reload` publishes one request on the control channel, which every API and worker
process hears at once; each rereads its own config file and writes its answer to a capped
stream, so the asker can wait for as many answers as PUBLISH counted listeners.
"""

import asyncio
import logging
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import orjson

from inferq.broker.connection import Redis, is_cluster, translate_errors
from inferq.broker.errors import BrokerError
from inferq.broker.keys import Keys
from inferq.config import ConfigError, GatewayConfig
from inferq.config.reload import ConfigFile, describe_change, reload_blocker

log = logging.getLogger("inferq.reload")


@dataclass(frozen=True)
class Answer:
    """What one process made of a reload request."""

    process: str
    ok: bool
    detail: str


async def broadcast_reload(
    redis: Redis, keys: Keys, wait_seconds: float
) -> tuple[int, list[Answer]]:
    """Ask every process to reload; returns how many heard it and the answers that came back
    within `wait_seconds`. `redis` must allow blocking reads."""
    log_key = keys.control_log()
    request = secrets.token_hex(6)
    answers: list[Answer] = []
    async with translate_errors():
        last: Any = await redis.xrevrange(log_key, count=1)
        since: Any = last[0][0] if last else b"0-0"
        message = orjson.dumps({"op": "reload", "request": request})
        listeners = int(await redis.publish(keys.control(), message))
        if is_cluster(redis):  # PUBLISH counts the listeners of one node; ask them all
            counts: Any = await redis.pubsub_numsub(keys.control(), target_nodes="all")
            listeners = sum(int(n) for _, n in counts)
        deadline = time.monotonic() + wait_seconds
        while len(answers) < listeners:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            rows: Any = await redis.xread({log_key: since}, count=100, block=int(left * 1000) + 1)
            for _stream, entries in rows or []:
                for entry_id, fields in entries:
                    since = entry_id
                    data = orjson.loads(fields[b"answer"])
                    if data.get("request") == request:
                        answers.append(Answer(data["process"], data["ok"], data["detail"]))
    return listeners, answers


async def _answer(redis: Redis, keys: Keys, request: str, answer: Answer) -> None:
    data = {"request": request, **answer.__dict__}
    async with translate_errors():
        await redis.xadd(
            keys.control_log(), {"answer": orjson.dumps(data)}, maxlen=1000, approximate=True
        )


class Reloader:
    """Keeps a process on the latest valid version of its config file.

    An invalid file, or one that would need a restart, is refused with an error in the log and
    the current config keeps serving; `apply` is called only with a config that parsed.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        file: ConfigFile,
        config: GatewayConfig,
        *,
        apply: Callable[[GatewayConfig], Awaitable[None]],
        process: str,
        watch_interval: float | None = 1.0,
    ) -> None:
        self.config = config
        self._redis = redis
        self._keys = keys
        self._file = file
        self._apply = apply
        self._process = process
        self._interval = watch_interval
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def handlers(self) -> dict[str, Callable[[bytes], None]]:
        """Pub/sub handlers to add to the process's Subscriber."""
        return {self._keys.control(): self._heard}

    def start(self) -> None:
        """Reload on SIGHUP and, unless `watch_config: false`, whenever the file changes."""
        loop = asyncio.get_running_loop()
        with suppress(NotImplementedError, RuntimeError):  # no signals off the main thread
            loop.add_signal_handler(signal.SIGHUP, self.trigger, "SIGHUP")
        if self._interval:
            self._spawn(self._watch(self._interval))

    async def stop(self) -> None:
        """Stop watching; a reload under way finishes first."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with suppress(asyncio.CancelledError):
                await task

    def trigger(self, reason: str, request: str | None = None) -> None:
        """Reload in the background."""
        self._spawn(self.reload(reason, request))

    async def reload(self, reason: str, request: str | None = None) -> Answer:
        """Reread the file and apply it if it is valid; answers `request` if there is one."""
        async with self._lock:
            ok, detail = await self._reload(reason)
        answer = Answer(self._process, ok, detail)
        if request:
            try:
                await _answer(self._redis, self._keys, request, answer)
            except BrokerError as exc:
                log.warning("could not answer reload request %s: %s", request, exc)
        return answer

    async def _reload(self, reason: str) -> tuple[bool, str]:
        try:
            new = await asyncio.to_thread(self._file.load)
        except ConfigError as exc:
            problems = "; ".join(f"{p}: {m}" if p else m for p, m in exc.problems)
            log.error(
                "config reload (%s) refused, still serving the previous config: %s: %s",
                reason,
                exc.source,
                problems,
            )
            return False, f"refused: {problems}"
        except (OSError, UnicodeError, ValueError) as exc:  # unreadable, not UTF-8, ...
            log.error(
                "config reload (%s) refused, still serving the previous config: %s",
                reason,
                exc,
            )
            return False, f"refused: {type(exc).__name__}: {exc}"
        blocker = reload_blocker(self.config, new)
        if blocker:
            log.error(
                "config reload (%s) refused, still serving the previous config: %s", reason, blocker
            )
            return False, f"refused: {blocker}"
        change = describe_change(self.config, new)
        if new == self.config:
            log.info("config reload (%s): no change", reason)
            return True, change
        try:
            await self._apply(new)
        except Exception as exc:  # a bug in applying must not kill the process that serves
            log.exception("config reload (%s) failed while applying it", reason)
            return False, f"failed: {type(exc).__name__}: {exc}"
        self.config = new
        log.info("config reloaded (%s): %s", reason, change)
        return True, change

    def _heard(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
            request = str(message["request"]) if message.get("op") == "reload" else None
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            request = None
        if request is None:
            log.warning("ignored a malformed control message")
            return
        self.trigger("inferq reload", request)

    async def _watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            # The setting is read each time: a reload may turn watching on or off.
            try:
                if self.config.fabric.watch_config and self._file.changed():
                    await self.reload("file changed")
            except Exception:  # a watcher that dies would miss every later edit
                log.exception("watching the config file failed; still watching")

    def _spawn(self, work: Awaitable[object]) -> None:
        async def run() -> None:
            await work

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
