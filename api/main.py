"""Run the API under uvicorn (uvloop + httptools: the hot path is HTTP parsing)."""

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
) -> None:
    """Serve until SIGTERM/SIGINT; uvicorn lets in-flight responses finish first. With
    `config_path`, follow reloads of that file."""
    app = create_app(config, redis_url, ConfigFile(config_path) if config_path else None)
    uvicorn.run(
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
    )
