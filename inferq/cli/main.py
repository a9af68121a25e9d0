"""The `inferq` command: api, worker, up, status, check-health, submit, config check."""

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from inferq.broker.connection import ClusterURL, SentinelURL
from inferq.cli.logs import configure
from inferq.config import ConfigError, GatewayConfig, RuntimeEnv, load_config, runtime_env

EXIT_CONFIG = 2

EPILOG = """examples:
  inferq up                                  # everything on this machine (what `make run` does)
  inferq api --port 8001                     # the HTTP facade only
  inferq api --port 8001 --processes 2       # two API processes sharing the port (more cores)
  inferq api --log-json                      # one JSON object per log line (or INFERQ_LOG_JSON=1)
  inferq worker --group local-model          # serve every deployment of one model group
  inferq worker --group gpt-4o --processes 3 # three processes for one backend (scale out)
  inferq reload                              # every API and worker rereads its config file
  inferq status --watch                      # queues, workers, throughput per group
  inferq check-health --api http://127.0.0.1:8001   # exit 0/1, for container healthchecks
  inferq submit requests.jsonl --out results.jsonl   # an OpenAI batch file through the batch lane
  inferq keys create --alias app1 --models fast --rpm 60   # a virtual key (printed once)
  inferq config check config/minimal_config.yaml
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_CONFIG
    env = runtime_env(getattr(args, "file", None) or getattr(args, "config", None))
    if args.log_json:
        env = replace(env, log_json=True)
    configure(env.log_level, json=env.log_json)
    try:
        config = load_config(env.config_path)
    except ConfigError as exc:
        print(f"inferq: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        SentinelURL.parse(env.redis_url)
        ClusterURL.parse(env.redis_url)
    except ValueError as exc:
        print(f"inferq: REDIS_URL: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    handler = {
        "api": _api,
        "worker": _worker,
        "up": _up,
        "config": _config_check,
        "status": _status,
        "check-health": _check_health,
        "reload": _reload,
        "submit": _submit,
        "keys": _keys,
    }[args.command]
    return handler(args, env, config)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferq",
        description="OpenAI-compatible LLM gateway built on Redis Streams.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    log_json = "one JSON object per log line (default: $INFERQ_LOG_JSON); `up` passes it on"
    parser.add_argument("--log-json", action="store_true", help=log_json)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        help="LiteLLM-format YAML (default: $INFERQ_CONFIG, else config/minimal_config.yaml); "
        "Redis is $REDIS_URL (default redis://127.0.0.1:6379/0)",
    )
    # Also after the command (`inferq api --log-json`); SUPPRESS keeps a flag given before it.
    common.add_argument("--log-json", action="store_true", default=argparse.SUPPRESS, help=log_json)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    api = sub.add_parser(
        "api",
        parents=[common],
        help="run the HTTP facade",
        description="Serve the OpenAI-compatible API. Example: inferq api --port 8001",
    )
    api.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    api.add_argument("--port", type=int, default=8001, help="port (default 8001)")
    api.add_argument(
        "--processes",
        type=_positive,
        default=1,
        help="run N API processes on the same port (SO_REUSEPORT: the kernel spreads "
        "connections between them), supervised by this one (default 1)",
    )
    api.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)

    worker = sub.add_parser(
        "worker",
        parents=[common],
        help="run a worker process for a model group or one deployment",
        description="Pull jobs from a model group's stream and call its backends; follows "
        "reloads of the config. Example: inferq worker --group local-model --processes 2",
    )
    worker.add_argument(
        "--group",
        action="append",
        help="model group to serve; repeat for several (default: all groups)",
    )
    worker.add_argument("--deployment", help="serve only this deployment id (e.g. local-model.0)")
    worker.add_argument(
        "--processes",
        type=_positive,
        default=1,
        metavar="N",
        help="run N copies of this worker, supervised and restarted if they die (default 1)",
    )
    worker.add_argument(
        "--concurrency",
        type=_positive,
        metavar="N",
        help="jobs each process runs at once per deployment "
        "(default: the deployment's max_parallel_requests)",
    )

    up = sub.add_parser(
        "up",
        parents=[common],
        help="run everything on this machine: Redis if needed, llama.cpp, API, workers",
        description="Start Redis (embedded when $REDIS_URL does not answer), a llama.cpp "
        "server for local deployments, the API and a worker per servable group. Example: inferq up",
    )
    up.add_argument("--host", default="127.0.0.1", help="API address (default 127.0.0.1)")
    up.add_argument("--port", type=int, default=8001, help="API port (default 8001)")
    up.add_argument(
        "--processes",
        type=_positive,
        default=1,
        metavar="N",
        help="worker processes serving every group (default 1)",
    )
    up.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".inferq"),
        metavar="DIR",
        help="where `up` keeps its state: the embedded Redis's data (DIR/redis, an append-only "
        "file) and logs (default .inferq, in the working directory)",
    )
    up.add_argument(
        "--fresh",
        action="store_true",
        help="start the embedded Redis empty: delete DIR/redis first (queues, batches, results, "
        "files, usage)",
    )

    status = sub.add_parser(
        "status",
        parents=[common],
        help="show queues, workers, throughput and cooldowns per model group",
        description="A table per model group: queue depth, running jobs, live workers, slots, "
        "in flight, requests/min and p50 latency over the last minute, cooldowns. "
        "Example: inferq status --watch",
    )
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    status.add_argument("--watch", action="store_true", help="refresh every 2 s until Ctrl-C")

    health = sub.add_parser(
        "check-health",
        parents=[common],
        help="exit 0 when healthy, 1 otherwise (for container healthchecks)",
        description="Checks that Redis answers, and optionally that a group has a live worker "
        "and that an API is ready. Example: inferq check-health --group local-model",
    )
    health.add_argument("--group", action="append", help="require a live worker for this group")
    health.add_argument("--api", metavar="URL", help="require GET URL/health/readiness to be 200")

    reload = sub.add_parser(
        "reload",
        parents=[common],
        help="make every API and worker process reread its config file",
        description="Broadcast a reload through Redis; each process rereads its own --config "
        "file and applies it without dropping in-flight requests, or refuses it (an invalid file "
        "keeps the old config serving). Prints each process's answer; exit 0 when all applied "
        "it. SIGHUP to a process, or saving the file, does the same for that process. "
        "Example: inferq reload",
    )
    reload.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for answers (default 5)"
    )

    submit = sub.add_parser(
        "submit",
        parents=[common],
        help="run an OpenAI batch input file (JSONL) through the batch lane",
        description="Queue every request of an OpenAI batch input file (lines of custom_id, "
        "method, url, body) in the batch lane, at most --window at once, and append each result "
        "to --out in OpenAI's batch output format as it finishes. A rerun of the same command "
        "skips lines already in --out and collects requests still running from the last run. "
        "Ctrl-C stops queueing and writes what has finished; Ctrl-C again quits at once. "
        "Exit 0 when every input line has its output line, else 1. "
        "Example: inferq submit requests.jsonl --out results.jsonl --window 128",
    )
    submit.add_argument("input", help="batch input file (JSONL)")
    submit.add_argument("--out", required=True, help="results file (JSONL), appended to")
    submit.add_argument(
        "--window",
        type=int,
        default=256,
        help="requests queued or running at once (default 256)",
    )
    submit.add_argument(
        "--id",
        dest="submission_id",
        help="submission id (default: derived from the input file's path and content)",
    )
    submit.add_argument(
        "--key",
        help="run the requests under this virtual key (its models, usage, budget and fair "
        "share of each group's batch slots); checked before anything is queued",
    )
    submit.add_argument(
        "--cancel",
        action="store_true",
        help="cancel the submission: its queued requests end as batch_cancelled",
    )

    from inferq.cli.keys import add_parser as add_keys

    add_keys(sub, common)

    cfg = sub.add_parser(
        "config",
        help="validate a config file",
        description="Validate a config file; exit 0 when usable, 2 with every problem otherwise. "
        "Example: inferq config check config/minimal_config.yaml",
    )
    cfg_sub = cfg.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = cfg_sub.add_parser(
        "check",
        parents=[common],
        help="validate FILE",
        description="Validate a config file: exit 0 and a summary when usable, 2 with every "
        "problem (each with its YAML path) otherwise. "
        "Example: inferq config check config/minimal_config.yaml",
    )
    check.add_argument("file", nargs="?", help="config file (default: --config or its default)")
    return parser


def _api(args: argparse.Namespace, env: RuntimeEnv, config: GatewayConfig) -> int:
    from inferq.api.main import run

    if args.processes > 1:
        from inferq.cli.processes import Copies

        argv = ["api", "--config", str(env.config_path), "--host", args.host]
        argv += ["--port", str(args.port), "--reuse-port"]
        return Copies(argv, args.processes, what="API").run()
    run(
        config,
        env.redis_url,
        args.host,
        args.port,
        log_level=env.log_level,
        config_path=env.config_path,
        reuse_port=args.reuse_port,
    )
    return 0


def _worker(args: argparse.Namespace, env: RuntimeEnv, config: GatewayConfig) -> int:
    from inferq.workers.main import run
    from inferq.workers.pool import Selection

    selection = Selection(tuple(args.group or ()), args.deployment)
    try:
        selection.select(config)
        if args.processes > 1:
            from inferq.cli.processes import Copies

            return Copies(_worker_argv(args, env), args.processes).run()
        run(
            config,
            env.redis_url,
            selection,
            config_path=env.config_path,
            slots=args.concurrency,
            crash_at=env.crash_at,
        )
    except ValueError as exc:
        print(f"inferq worker: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def _keys(args: argparse.Namespace, env: RuntimeEnv, config: GatewayConfig) -> int:
    from inferq.cli.keys import run_keys

    return run_keys(args, config, env.redis_url)


def _up(args: argparse.Namespace, env: RuntimeEnv, config: GatewayConfig) -> int:
    from inferq.cli.up import up

    return up(
        config,
        env,
        args.host,
        args.port,
        args.processes,
        state_dir=args.state_dir,
        fresh=args.fresh,
    )


def _status(args: argparse.Namespace, env: RuntimeEnv, config: GatewayConfig) -> int:
    from inferq.cli.status import show_status

    return show_status(config, env.redis_url, as_json=args.json, watch=args.watch)


def _check_health(args: argparse.Namespace, env: RuntimeEnv, config: GatewayConfig) -> int:
    from inferq.cli.status import check_health

    return check_health(config, env.redis_url, groups=args.group or [], api=args.api)


def _worker_argv(args: argparse.Namespace, env: RuntimeEnv) -> list[str]:
    """The command line of one copy: the same selection, one process."""
    argv = ["worker", "--config", str(env.config_path)]
    for group in args.group or ():
        argv += ["--group", group]
    if args.deployment:
        argv += ["--deployment", args.deployment]
    if args.concurrency:
        argv += ["--concurrency", str(args.concurrency)]
    return argv


def _reload(args: argparse.Namespace, env: RuntimeEnv, config: GatewayConfig) -> int:
    from inferq.cli.reload import reload_all

    return reload_all(config, env.redis_url, args.timeout)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _submit(args: argparse.Namespace, env: RuntimeEnv, config: GatewayConfig) -> int:
    from inferq.cli.submit import submit

    if args.window < 1:
        print("inferq submit: --window must be at least 1", file=sys.stderr)
        return EXIT_CONFIG
    return submit(
        config,
        env.redis_url,
        Path(args.input),
        Path(args.out),
        window=args.window,
        submission_id=args.submission_id,
        cancel=args.cancel,
        key=args.key,
    )


def _config_check(args: argparse.Namespace, env: RuntimeEnv, config: GatewayConfig) -> int:
    groups = len(config.groups)
    deployments = sum(len(d) for d in config.groups.values())
    print(
        f"{env.config_path}: OK: {groups} model groups, {deployments} deployments, "
        f"{len(config.aliases)} aliases"
    )
    for deps in config.groups.values():
        for d in deps:
            note = d.unavailable_reason
            if note:
                print(f"  note: {d.id} is unavailable: {note}")
    return 0
