"""`inferq worker --processes N` and `inferq api --processes N`: N copies of one command,
supervised by this process.

Each copy is a whole `inferq worker` (or `inferq api`) process, with its own event loop, Redis
connections and heartbeats, so copies use several cores and one crashing takes no other down
(API copies share their port through SO_REUSEPORT). The supervisor
restarts a copy that exits on its own, forwards SIGHUP (reload) to every copy, and on SIGTERM
or Ctrl-C lets each finish its in-flight jobs before it exits.
"""

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

log = logging.getLogger("inferq.worker")

RESTART_BACKOFF_MAX = 30.0


class Copies:
    """The supervised copies of one command."""

    def __init__(self, argv: Sequence[str], count: int, what: str = "worker") -> None:
        self._cmd = [sys.executable, "-m", "inferq.cli", *argv]
        self._what = what
        self._count = count
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self._started = [0.0] * count
        self._backoff = [1.0] * count
        self._due = [0.0] * count
        self._stopping = False

    def run(self) -> int:
        """Start the copies and supervise them until SIGTERM or SIGINT; returns an exit code."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._forward)
        log.info("starting %d %s processes: %s", self._count, self._what, " ".join(self._cmd[3:]))
        for i in range(self._count):
            self._start(i)
        while not self._stopping:
            self._check()
            time.sleep(0.2)
        return self._wait()

    def _start(self, i: int) -> None:
        self._procs[i] = subprocess.Popen(self._cmd)
        self._started[i] = time.monotonic()

    def _check(self) -> None:
        now = time.monotonic()
        for i, proc in enumerate(self._procs):
            if proc is None:
                if now >= self._due[i]:
                    self._start(i)
                continue
            status = proc.poll()
            if status is None:
                continue
            # A copy that ran a while before dying restarts at once; one that keeps dying
            # at start (bad key, backend gone) backs off instead of spinning.
            if now - self._started[i] > 60:
                self._backoff[i] = 1.0
            log.warning(
                "%s process %d (pid %d) exited with status %s; restarting in %gs",
                self._what,
                i + 1,
                proc.pid,
                status,
                self._backoff[i],
            )
            self._procs[i] = None
            self._due[i] = now + self._backoff[i]
            self._backoff[i] = min(self._backoff[i] * 2, RESTART_BACKOFF_MAX)

    def _stop(self, *_: object) -> None:
        self._stopping = True

    def _forward(self, signum: int, _frame: object) -> None:
        for proc in self._procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signum)

    def _wait(self) -> int:
        for proc in self._procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            if proc is None:
                continue
            try:
                proc.wait(60)  # each copy drains within its own grace period
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return 0
