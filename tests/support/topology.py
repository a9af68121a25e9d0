"""Redis topologies for tests, from the installed `redis-server`: a primary, a replica and three
sentinels on free loopback ports (DESIGN.md: the replica is promoted about 5 s after the primary
dies with these timings)."""

import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis as sync_redis

from inferq.cli.local import free_port

SERVICE = "mymaster"


def redis_server() -> str | None:
    """The installed `redis-server`, if any."""
    return shutil.which("redis-server")


class SentinelTopology:
    """A primary, a `--replicaof` replica and three sentinels watching them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.primary_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """The REDIS_URL naming the primary through the sentinels."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self, timeout: float = 30.0) -> "SentinelTopology":
        """Start every server and wait until the sentinels know the primary, its replica and
        each other (only then can they agree on a failover)."""
        self._server("primary", self.primary_port)
        self._server(
            "replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.primary_port)
        )
        for i, port in enumerate(self.sentinel_ports):
            conf = self.workdir / f"sentinel{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.workdir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self._spawn(f"sentinel{i}", [str(conf), "--sentinel"])
        deadline = time.monotonic() + timeout
        while not self._ready():
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinels did not see the primary, replica and each other")
            time.sleep(0.2)
        return self

    def kill_primary(self) -> None:
        """SIGKILL the current primary (no goodbye, no last write)."""
        self.procs["primary"].send_signal(signal.SIGKILL)
        self.procs["primary"].wait()

    def primary(self) -> tuple[str, int] | None:
        """The primary the first sentinel names now."""
        r = sync_redis.Redis(port=self.sentinel_ports[0], socket_timeout=1)
        try:
            addr = r.execute_command("SENTINEL", "get-master-addr-by-name", SERVICE)
            return (addr[0].decode(), int(addr[1])) if addr else None
        finally:
            r.close()

    def stop(self) -> None:
        """Stop everything."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            proc.wait()

    def _server(self, name: str, port: int, *args: str) -> None:
        data = self.workdir / name
        data.mkdir(exist_ok=True)
        self._spawn(
            name,
            ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--protected-mode", "no", "--dir", str(data), *args],
        )  # fmt: skip

    def _spawn(self, name: str, args: list[str]) -> None:
        binary = redis_server()
        assert binary is not None
        with (self.workdir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [binary, *args, "--loglevel", "warning"], stdout=log, stderr=subprocess.STDOUT
            )

    def _ready(self) -> bool:
        for port in self.sentinel_ports:
            r = sync_redis.Redis(port=port, socket_timeout=1, decode_responses=True)
            try:
                state = r.execute_command("SENTINEL", "master", SERVICE)
            except sync_redis.RedisError:
                return False
            finally:
                r.close()
            info = (
                dict(zip(state[::2], state[1::2], strict=True))
                if isinstance(state, list)
                else state
            )
            if int(info.get("num-slaves", 0)) < 1 or int(info.get("num-other-sentinels", 0)) < 2:
                return False
        return True
