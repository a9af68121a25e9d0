"""inferq, for Python scripts: submit batch work straight to the queue, and load configs.

Everything here is public and documented in the README ("Python API"); every other module is
internal and may change. A batch script:

    import asyncio
    import inferq

    async def main() -> None:
        requests = [
            inferq.BatchRequest("q1", inferq.JobKind.CHAT,
                                {"model": "local-model",
                                 "messages": [{"role": "user", "content": "Hi"}]}),
        ]
        async with inferq.connect("config.yaml", "redis://127.0.0.1:6379/0") as client:
            async for outcome in client.submit("nightly-2026-12-02", requests, window=64):
                print(outcome.custom_id, outcome.status, outcome.response or outcome.error)
            print(await client.progress("nightly-2026-12-02"))

    asyncio.run(main())

The package is laid out as the fabric is: `inferq.config` (the YAML), `inferq.broker` (the only
code that talks to Redis), `inferq.api` (the HTTP facade), `inferq.workers` (backend calls) and
`inferq.cli` (the `inferq` command). In the repository the first four are the top-level folders
`config/`, `broker/`, `api/` and `workers/`, linked into `inferq/`.
"""

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inferq.broker.batch.submit import BatchRequest
    from inferq.broker.errors import BrokerError, BrokerUnavailable
    from inferq.broker.jobs.results import Outcome, Progress
    from inferq.broker.messages import ErrorInfo, JobKind
    from inferq.client import Client, connect, read_requests
    from inferq.config import ConfigError, GatewayConfig, load_config, parse_config

# Where each public name lives. They are imported on first use, not with the package: every
# `inferq api` and `inferq worker` process imports `inferq` first, and a worker needs neither the
# batch client nor what it pulls in (issue 15: idle memory).
_HOME = {
    "BatchRequest": "inferq.broker.batch.submit",
    "BrokerError": "inferq.broker.errors",
    "BrokerUnavailable": "inferq.broker.errors",
    "Outcome": "inferq.broker.jobs.results",
    "Progress": "inferq.broker.jobs.results",
    "ErrorInfo": "inferq.broker.messages",
    "JobKind": "inferq.broker.messages",
    "Client": "inferq.client",
    "connect": "inferq.client",
    "read_requests": "inferq.client",
    "ConfigError": "inferq.config",
    "GatewayConfig": "inferq.config",
    "load_config": "inferq.config",
    "parse_config": "inferq.config",
}


def __getattr__(name: str) -> object:
    if name not in _HOME:
        raise AttributeError(f"module 'inferq' has no attribute {name!r}")
    value = getattr(import_module(_HOME[name]), name)
    globals()[name] = value  # found directly from now on
    return value


__all__ = [
    "BatchRequest",
    "BrokerError",
    "BrokerUnavailable",
    "Client",
    "ConfigError",
    "ErrorInfo",
    "GatewayConfig",
    "JobKind",
    "Outcome",
    "Progress",
    "connect",
    "load_config",
    "parse_config",
    "read_requests",
]
