"""`make bench-compare`: the cases of `make bench` against the fake backend directly, through
inferq and through the LiteLLM proxy, in one run, with issue 15's ratios.

Same layout for both gateways: the fake backend and the load generator on CPU 0; inferq's API,
worker and Redis, or the LiteLLM proxy (one uvicorn worker, no database), alone on CPU 1. The
proxy reads the same model list and master key as inferq. LiteLLM runs from its own virtualenv,
never the project's: `make bench-compare` installs `litellm[proxy]==1.80.0` once into
~/.cache/inferq/litellm-1.80.0. Writes the table and PNG plots to `--out` (bench/results).
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from bench import cases, plots, report
from bench.harness import FABRIC_CPU, KEY, Bench, Gateway, gateway_config, pinned, wait_port
from inferq.cli.local import free_port

LITELLM_VERSION = "1.80.0"
# Where `make bench-compare` installs it: outside the tree, shared by every checkout.
DEFAULT_VENV = Path.home() / ".cache" / "inferq" / f"litellm-{LITELLM_VERSION}"
# What the proxy must not do here: load a .env from above its install folder, reach the network
# for its model cost map, or find a database. (It runs without one: no DATABASE_URL.)
LITELLM_ENV = {
    "LITELLM_MODE": "PRODUCTION",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOG": "ERROR",
}
UNSET = ("DATABASE_URL", "DIRECT_URL", "DATABASE_HOST", "REDIS_URL", "REDIS_HOST")
# uvicorn's access line per request off, as inferq's API runs it (access_log=False).
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"uvicorn.access": {"level": "WARNING"}},
}


def litellm_binary(venv: Path) -> Path:
    """The `litellm` command of the benchmark's own virtualenv; says how to get it if missing."""
    binary = venv / "bin" / "litellm"
    if not binary.is_file():
        raise SystemExit(
            f"no LiteLLM proxy at {binary}: `make bench-compare` installs "
            f"litellm[proxy]=={LITELLM_VERSION} there (or pass --litellm-venv)"
        )
    return binary


def litellm_command(venv: Path, config: Path, port: int, log_config: Path) -> list[str]:
    """The proxy on 127.0.0.1:`port`, one worker (like inferq's one API process), pinned to the
    gateway's CPU."""
    return pinned(
        FABRIC_CPU, str(litellm_binary(venv)), "--config", str(config), "--host", "127.0.0.1",
        "--port", str(port), "--num_workers", "1", "--telemetry", "False",
        "--log_config", str(log_config),
    )  # fmt: skip


def litellm_env(base: dict[str, str]) -> dict[str, str]:
    """`base` without any database or Redis the proxy could pick up, plus LITELLM_ENV."""
    return {**{k: v for k, v in base.items() if k not in UNSET}, **LITELLM_ENV}


def start_litellm(bench: Bench, backend: Gateway, venv: Path) -> Gateway:
    """The LiteLLM proxy with the same model list and master key as inferq; waits until it
    answers a chat completion."""
    config = bench.work / "litellm.yaml"
    config.write_text(gateway_config(backend.port, inferq=False))
    log_config = bench.work / "litellm-logging.json"
    log_config.write_text(json.dumps(LOG_CONFIG))
    port = free_port()
    cmd = litellm_command(venv, config, port, log_config)
    proc = bench.spawn(cmd, env=litellm_env(dict(os.environ)), stdout=subprocess.DEVNULL)
    wait_port(port, proc, "LiteLLM proxy", timeout=120)
    gw = Gateway("LiteLLM", port, KEY, {"proxy": proc.pid}, config)
    body = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    reply = httpx.post(gw.url, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    if reply.status_code != 200:
        raise SystemExit(f"LiteLLM proxy answered {reply.status_code}: {reply.text[:300]}")
    return gw


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    cases.add_arguments(parser)
    parser.add_argument("--litellm-venv", type=Path, default=DEFAULT_VENV)
    args = parser.parse_args()
    measured = report.commit()  # before anything else can change the tree
    litellm_binary(args.litellm_venv)  # fail before starting anything
    opts = cases.options(args, cache_hit=False)
    with Bench(prefix="inferq-compare-") as bench:
        direct = cases.Target(bench.backend())
        inferq = cases.Target(bench.inferq(direct.gateway))
        litellm = cases.Target(start_litellm(bench, direct.gateway, args.litellm_venv))
        targets = [direct, inferq, litellm]
        cases.run_all(targets, opts, args.repeat)
        if args.soak_minutes:
            for t in (inferq, litellm):
                cases.soak(t, args.soak_minutes)
    gateways = [inferq, litellm]
    soaked = report.soak(gateways)
    lines = [
        *report.header(measured, args.repeat),
        f"LiteLLM {LITELLM_VERSION} proxy: 1 uvicorn worker, no database, same model list and "
        "master key; each gateway alone on CPU 1, backend and load generator on CPU 0",
        "",
        *report.headline(direct, inferq, litellm),
        "",
        *report.figures(targets),
        "",
        *report.sweep(targets),
        "",
        *report.resources(gateways),
        *(["", *soaked] if soaked else []),
    ]
    report.publish(lines, args.out, "compare")
    title = f"make bench-compare, commit {measured}: direct, inferq, LiteLLM {LITELLM_VERSION}"
    for path in plots.write_all(targets, args.out, "compare", title):
        print(f"wrote {path}")
    errors = sum(r.errors for t in targets for r in t.runs)
    errors += sum(t.throughput_errors for t in targets)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
