"""`inferq submit`: run an OpenAI batch input file (JSONL) through the batch lane and write the
results file, with a progress bar; resumable, and safe to interrupt.

Every input line gets exactly one output line, in OpenAI's batch output format, appended whole
and flushed as its result arrives. A rerun of the same input skips lines already in the output
(a partial last line left by a crash is dropped first) and reuses the submission, so requests
that finished after an interruption are read from their result records, not computed again.
"""

import asyncio
import hashlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import orjson

from inferq.broker.batch.batchfile import Line, parse_input, problem_line, result_line
from inferq.broker.batch.submit import BatchRequest, Submitter, check_submission_id
from inferq.broker.connection import Redis, connect
from inferq.broker.errors import BrokerError
from inferq.broker.keys import Keys
from inferq.broker.ops.registry import live_workers
from inferq.broker.tenants import limits, vkeys
from inferq.broker.tenants.vkeys import KeyRecord
from inferq.config import GatewayConfig
from inferq.config.errors import RouteError


def submission_id_for(path: Path, data: bytes) -> str:
    """The submission of an input file: the same file with the same content is the same
    submission, so a rerun picks up its results."""
    digest = hashlib.sha256(str(path.resolve()).encode() + b"\0" + data).hexdigest()
    return f"file-{digest[:24]}"


def read_done(out: Path) -> tuple[set[str], set[int]]:
    """The custom_ids and (for lines that had none) input line numbers already in `out`; a
    partial last line (the process was killed mid-write) is cut off first."""
    if not out.exists():
        return set(), set()
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        with out.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
        data = data[: data.rfind(b"\n") + 1]
    ids: set[str] = set()
    numbers: set[int] = set()
    for raw in data.splitlines():
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(item, dict) and isinstance(item.get("custom_id"), str):
            ids.add(item["custom_id"])
        elif isinstance(item, dict) and isinstance(item.get("line"), int):
            numbers.add(item["line"])
    return ids, numbers


class ProgressBar:
    """Done/total, rate and ETA on stderr: a redrawn line on a terminal, else a line every
    `every` seconds."""

    def __init__(self, total: int, done: int, stream: TextIO, every: float = 10.0) -> None:
        self.total, self.done = total, done
        self._start_done = done
        self._stream = stream
        self._tty = stream.isatty()
        self._every = every
        self._started = self._shown = time.monotonic()

    def advance(self, n: int = 1) -> None:
        """Count `n` more lines written."""
        self.done += n
        now = time.monotonic()
        if now - self._shown >= (0.1 if self._tty else self._every):
            self._shown = now
            self._show()

    def _show(self, end: str = "") -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = (self.done - self._start_done) / elapsed
        left = self.total - self.done
        eta = _duration(left / rate) if rate > 0 else "-"
        pct = 100 * self.done / self.total if self.total else 100.0
        text = f"{self.done}/{self.total} ({pct:.1f}%)  {rate:.1f}/s  ETA {eta}"
        if self._tty:
            width = 24
            filled = int(width * self.done / self.total) if self.total else width
            self._stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}\033[K{end}")
        else:
            self._stream.write(f"inferq submit: {text}\n")
        self._stream.flush()

    def finish(self) -> None:
        """Show the last state (and end the redrawn line)."""
        self._show(end="\n")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def submit(
    config: GatewayConfig,
    redis_url: str,
    input_path: Path,
    out_path: Path,
    *,
    window: int,
    submission_id: str | None = None,
    cancel: bool = False,
    key: str | None = None,
) -> int:
    """Run the batch file; 0 when every input line has its output line, 1 otherwise."""
    try:
        data = input_path.read_bytes()
    except OSError as exc:
        print(f"inferq submit: cannot read {input_path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    sid = submission_id or submission_id_for(input_path, data)
    try:
        check_submission_id(sid)
    except ValueError as exc:
        print(f"inferq submit: {exc}", file=sys.stderr)
        return 2
    job = _Run(config, redis_url, sid, lines=parse_input(data), out=out_path, window=window)
    job.key = key
    try:
        return asyncio.run(job.cancel() if cancel else job.main())
    except ValueError as exc:
        print(f"inferq submit: {exc}", file=sys.stderr)
        return 2
    except BrokerError as exc:
        print(f"\ninferq submit: {exc}; rerun the same command to carry on", file=sys.stderr)
        return 1


class _Run:
    """One run of `inferq submit`."""

    def __init__(
        self,
        config: GatewayConfig,
        redis_url: str,
        sid: str,
        *,
        lines: list[Line],
        out: Path,
        window: int,
    ) -> None:
        self.config, self.redis_url, self.sid = config, redis_url, sid
        self.lines, self.out, self.window = lines, out, window
        self.stop = asyncio.Event()
        self.interrupts = 0
        self.key: str | None = None  # the virtual key the requests run under

    async def cancel(self) -> int:
        redis = connect(self.redis_url, max_connections=4)
        try:
            submitter = Submitter(redis, Keys(self.config.fabric.key_prefix), self.config)
            await submitter.cancel(self.sid)
            p = await submitter.progress(self.sid)
        finally:
            await redis.aclose()
        print(
            f"inferq submit: cancelled {self.sid}: {p.finished} of {p.submitted} queued requests "
            "had finished; the rest end as batch_cancelled (rerun to write them)"
        )
        return 0

    async def main(self) -> int:
        done_ids, done_lines = read_done(self.out)
        todo = [
            line
            for line in self.lines
            if line.number not in done_lines
            and (line.custom_id is None or line.custom_id not in done_ids)
        ]
        bar = ProgressBar(len(self.lines), len(self.lines) - len(todo), sys.stderr)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self._interrupted)
        redis = connect(self.redis_url, max_connections=8)
        try:
            keys = Keys(self.config.fabric.key_prefix)
            tenant = await _usable_key(redis, keys, self.key) if self.key else None
            with self.out.open("ab") as out:
                for line in todo:
                    if line.request is None:
                        _write(out, problem_line(line))
                        bar.advance()
                requests = [line.request for line in todo if line.request is not None]
                await self._warn_idle(redis, requests)
                submitter = Submitter(redis, keys, self.config, tenant)
                async for outcome in submitter.run(
                    self.sid, requests, window=self.window, stop=self.stop
                ):
                    _write(out, result_line(outcome))
                    bar.advance()
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            await redis.aclose()
        bar.finish()
        missing = bar.total - bar.done
        if missing:
            print(
                f"inferq submit: stopped with {missing} lines not yet written to {self.out}; "
                "requests already queued keep running: rerun the same command to collect them",
                file=sys.stderr,
            )
            return 1
        print(f"inferq submit: all {bar.total} lines written to {self.out}", file=sys.stderr)
        return 0

    def _interrupted(self) -> None:
        self.interrupts += 1
        if self.interrupts > 1:
            sys.stderr.write("\ninferq submit: stopped at once\n")
            os._exit(130)  # every line written so far is whole and flushed
        self.stop.set()
        sys.stderr.write(
            "\ninferq submit: stopping: no more requests are queued; writing what has "
            "finished (Ctrl-C again to quit at once)\n"
        )

    async def _warn_idle(self, redis: Redis, requests: list[BatchRequest]) -> None:
        """Say so when a model's group has no live worker: its requests would wait."""
        groups: set[str] = set()
        for request in requests:
            model = request.body.get("model")
            try:
                groups.add(self.config.resolve(str(model))[0])
            except RouteError:
                continue  # reported in its output line
        alive = {w.group for w in await live_workers(redis, Keys(self.config.fabric.key_prefix))}
        for group in sorted(groups - alive):
            print(
                f"inferq submit: warning: no worker serves model group {group} right now; its "
                f"requests wait until one starts (inferq worker --group {group})",
                file=sys.stderr,
            )


async def _usable_key(redis: Redis, keys: Keys, key: str) -> KeyRecord:
    """The key's record; ValueError (before anything is queued) when the key is unknown,
    revoked or expired, or has spent its budget for the period."""
    tenant = await vkeys.usable(redis, keys, key)
    now = time.time()
    over = await limits.over_budget(redis, keys, tenant, now)
    if over is not None:
        raise ValueError(f"{limits.budget_message(tenant, *over, now=now)} Nothing was queued.")
    return tenant


def _write(out: BinaryIO, item: dict[str, Any]) -> None:
    out.write(orjson.dumps(item) + b"\n")  # one write per line: appended whole
    out.flush()
