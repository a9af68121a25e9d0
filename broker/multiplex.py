"""Automatic pipelining: the commands many tasks issue at one moment share one write on one
connection, so a process holds a few Redis connections whatever its concurrency.

redis-py's asyncio client takes a pooled connection per command in flight: 100 concurrent
streams held about 100 connections, and 10,000 jobs ran a 256-connection pool dry ("No
connection available"), which read as an outage. `MultiplexedRedis` is a `redis.asyncio.Redis`
whose commands (and pipelines, MULTI blocks included) go to a queue instead; each turn of the
event loop, a lane takes everything queued and writes it as one pipeline on the one connection
it keeps, then hands each caller its reply. `lanes` batches may be on the wire at once; past
that, commands wait in the queue for the next batch: backpressure, never an error.

Commands that block the connection (XREAD/XREADGROUP with BLOCK, WAIT, blocking pops) or
carry connection state (WATCH, SELECT, SUBSCRIBE, ...) go the ordinary way, on a pooled
connection of their own.
"""

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ExecAbortError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("inferq.broker")

# Commands that hold the connection until something happens, or change its state.
_DIRECT = frozenset({
    "BLPOP", "BRPOP", "BLMOVE", "BRPOPLPUSH", "BZPOPMIN", "BZPOPMAX", "BLMPOP", "BZMPOP",
    "WAIT", "WAITAOF", "WATCH", "UNWATCH", "MULTI", "EXEC", "DISCARD", "SELECT", "AUTH",
    "HELLO", "RESET", "CLIENT", "MONITOR", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE",
    "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE", "READONLY", "READWRITE", "ASKING",
})  # fmt: skip
_READS = frozenset({"XREAD", "XREADGROUP"})  # blocking only with BLOCK
# Errors after which a connection's replies can no longer be trusted to line up.
_BROKEN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError, TimeoutError)
# At most this many commands in one write: a huge burst goes out in several batches.
MAX_BATCH = 512

Command = tuple[tuple[Any, ...], dict[str, Any]]


class _Unit:
    """What one caller awaits: one command, or a pipeline (MULTI/EXEC when `transaction`)."""

    __slots__ = ("commands", "future", "raise_on_error", "single", "transaction")

    def __init__(
        self,
        commands: list[Command],
        future: "asyncio.Future[Any]",
        *,
        single: bool = False,
        transaction: bool = False,
        raise_on_error: bool = True,
    ) -> None:
        self.commands = commands
        self.future = future
        self.single = single
        self.transaction = transaction
        self.raise_on_error = raise_on_error

    def packed(self) -> Iterable[tuple[Any, ...]]:
        """The command lines this unit puts on the wire, in order."""
        if self.transaction:
            yield ("MULTI",)
        for args, _ in self.commands:
            yield args
        if self.transaction:
            yield ("EXEC",)

    def resolve(self, value: Any) -> None:
        if not self.future.done():
            self.future.set_result(value)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


def _blocks(args: tuple[Any, ...]) -> bool:
    """True for a command that must have a connection to itself."""
    first = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
    name = first.split(" ", 1)[0].upper()
    if name in _DIRECT:
        return True
    return name in _READS and any(a in (b"BLOCK", "BLOCK") for a in args[1:])


class _Muxer:
    """The queue of units and the lanes that write them out."""

    def __init__(self, client: "MultiplexedRedis", lanes: int) -> None:
        self._client = client
        self._queue: deque[_Unit] = deque()
        self._idle: list[_Lane] = [_Lane(self, i) for i in range(lanes)]
        self._lanes = list(self._idle)
        self._scheduled = False
        self._closed = False

    def submit(self, unit: _Unit) -> None:
        if self._closed:
            unit.fail(RedisConnectionError("the Redis client is closed"))
            return
        self._queue.append(unit)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._scheduled = False
        while self._queue and self._idle:
            self._idle.pop().start(self._take())

    def _take(self) -> list[_Unit]:
        batch: list[_Unit] = []
        size = 0
        while self._queue and size < MAX_BATCH:
            unit = self._queue.popleft()
            if unit.future.done():
                continue  # its caller was cancelled before it went out: do not send it
            batch.append(unit)
            size += len(unit.commands) + 2 * unit.transaction
        return batch

    def lane_free(self, lane: "_Lane") -> None:
        if self._queue and not self._closed:
            lane.start(self._take())
        else:
            self._idle.append(lane)

    async def aclose(self) -> None:
        self._closed = True
        while self._queue:
            self._queue.popleft().fail(RedisConnectionError("the Redis client is closed"))
        for lane in self._lanes:
            await lane.aclose()


class _Lane:
    """One connection and the batch on it (one at a time)."""

    def __init__(self, muxer: _Muxer, index: int) -> None:
        self._muxer = muxer
        self._index = index
        self._conn: Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._read = 0  # replies read of the batch on the wire
        self._timeout: float | None = None  # seconds a batch may take (the socket timeout)

    def start(self, batch: list[_Unit]) -> None:
        if not batch:
            self._muxer.lane_free(self)
            return
        self._task = asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[_Unit]) -> None:
        try:
            await self._execute(batch)
        except BaseException as exc:  # every caller hears of it; the lane carries on
            for unit in batch:
                unit.fail(exc if isinstance(exc, Exception) else RedisConnectionError(str(exc)))
            if not isinstance(exc, Exception):
                raise
        finally:
            self._muxer.lane_free(self)

    async def _execute(self, batch: list[_Unit]) -> None:
        client = self._muxer._client
        if self._conn is None:
            self._conn = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
            # One deadline for the whole batch instead of one per write and per reply
            # (redis-py's socket timeout runs the write as a task of its own).
            self._timeout, self._conn.socket_timeout = self._conn.socket_timeout, None
        conn = self._conn
        packed = conn.pack_commands(args for unit in batch for args in unit.packed())
        for attempt in (1, 2):
            self._read = 0
            try:
                async with asyncio.timeout(self._timeout):
                    if not conn.is_connected:
                        # connect() itself: a Sentinel connection asks where the primary is
                        # now (sending on a closed connection would reopen the old address).
                        await conn.connect()
                    await conn.send_packed_command(packed)
                    for unit in batch:
                        if unit.transaction:
                            await self._transaction(conn, unit)
                        else:
                            await self._pipeline(conn, unit)
                return
            except _BROKEN as exc:
                await conn.disconnect()
                # A connection that died while idle (Redis restarted, a failover) fails on
                # its first use before any reply: the batch goes once more on a fresh
                # connection, as redis-py retries a command. Past the first reply, what was
                # sent may have run: the callers hear of the error instead.
                if attempt == 2 or self._read:
                    for unit in batch:
                        unit.fail(exc)
                    return

    async def _pipeline(self, conn: Connection, unit: _Unit) -> None:
        client = self._muxer._client
        replies: list[Any] = []
        for args, options in unit.commands:
            try:
                replies.append(await client.parse_response(conn, args[0], **options))
            except ResponseError as exc:
                replies.append(exc)
            self._read += 1
        if unit.single:
            if isinstance(replies[0], Exception):
                unit.fail(replies[0])
            else:
                unit.resolve(replies[0])
            return
        if unit.raise_on_error:
            for reply in replies:
                if isinstance(reply, ResponseError):
                    unit.fail(reply)
                    return
        unit.resolve(replies)

    async def _transaction(self, conn: Connection, unit: _Unit) -> None:
        client = self._muxer._client
        errors: list[ResponseError] = []
        for _ in range(len(unit.commands) + 1):  # MULTI's OK, then QUEUED for each command
            try:
                await client.parse_response(conn, "_")
            except ResponseError as exc:
                errors.append(exc)
            self._read += 1
        try:
            raw = await client.parse_response(conn, "_")
        except ExecAbortError as exc:
            unit.fail(errors[0] if errors else exc)
            return
        except ResponseError as exc:
            unit.fail(exc)
            return
        if errors:
            unit.fail(errors[0])
            return
        results: list[Any] = []
        for reply, (args, options) in zip(raw or [], unit.commands, strict=False):
            if isinstance(reply, Exception):
                if unit.raise_on_error:
                    unit.fail(reply)
                    return
                results.append(reply)
                continue
            options.pop("keys", None)
            callback = client.response_callbacks.get(args[0])
            value = reply if callback is None else callback(reply, **options)
            results.append(await value if inspect.isawaitable(value) else value)
        unit.resolve(results)

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with _suppress():
                await self._task
        if self._conn is not None:
            await self._muxer._client.connection_pool.release(self._conn)
            self._conn = None


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


class MultiplexedRedis(aioredis.Redis):
    """A redis-py asyncio client whose commands share `lanes` connections (see the module)."""

    def __init__(self, *args: Any, lanes: int = 4, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._muxer = _Muxer(self, lanes)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Queue the command for the next batch (or, if it blocks, send it on its own)."""
        if _blocks(args):
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._muxer.submit(_Unit([(args, options)], future, single=True))
        return await future

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        """A pipeline whose `execute()` joins the next batch as one unit (MULTI/EXEC kept
        together)."""
        return _MuxPipeline(self, transaction, shard_hint)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Fail what is queued, give the lanes' connections back, then close as usual."""
        await self._muxer.aclose()
        await super().aclose(close_connection_pool)


class _MuxPipeline(Pipeline):
    def __init__(self, client: MultiplexedRedis, transaction: bool, shard_hint: str | None):
        super().__init__(client.connection_pool, client.response_callbacks, transaction, shard_hint)
        self._mux_client = client

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack = self.command_stack
        if (
            not stack
            or self.watching
            or self.scripts
            or self.explicit_transaction
            or any(_blocks(args) for args, _ in stack)
        ):
            return await super().execute(raise_on_error)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        unit = _Unit(
            [(args, dict(options)) for args, options in stack],
            future,
            transaction=self.is_transaction,
            raise_on_error=raise_on_error,
        )
        self._mux_client._muxer.submit(unit)
        try:
            result: list[Any] = await future
        finally:
            await self.reset()  # type: ignore[no-untyped-call]
        return result
