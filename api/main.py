"""Run the API under uvicorn (uvloop + httptools: the hot path is HTTP parsing; it beat granian
on this machine, README "Layout and choices")."""

import socket
from pathlib import Path

import uvicorn

from inferq.api.app import create_app
from inferq.config import GatewayConfig
from inferq.config.reload import ConfigFile


def run(
    config: GatewayConfig,
    redis_url: str,
    host: str,
    port: int,
    *,
    log_level: str,
    config_path: Path | None = None,
    reuse_port: bool = False,
) -> None:
    """Serve until SIGTERM/SIGINT; uvicorn lets in-flight responses finish first. With
    `config_path`, follow reloads of that file. With `reuse_port`, bind with SO_REUSEPORT, so
    several API processes share the port and the kernel spreads connections between them."""
    app = create_app(config, redis_url, ConfigFile(config_path) if config_path else None)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="uvloop",
            http="httptools",
            # inferq writes one access line per request itself (api/middleware/access.py), and
            # uvicorn's own records go through the handler `inferq.cli.logs` set up, in its format,
            # exactly once.
            access_log=False,
            log_config=None,
            log_level=log_level.lower(),
            timeout_graceful_shutdown=30,
            server_header=False,
            # Thousands of clients may connect at once (bench.streams): a deep accept queue
            # (the kernel caps it at net.core.somaxconn) instead of resets.
            backlog=4096,
            # No WebSocket routes: without this uvicorn imports a WebSocket implementation it
            # would never use (issue 15: idle memory).
            ws="none",
        )
    )
    server.run(sockets=[_shared_socket(host, port)] if reuse_port else None)


def _shared_socket(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.set_inheritable(True)
    return sock
