"""The benchmark harness's own logic (no load, no timing, no install): the config both gateways
read, where `make bench-compare` finds LiteLLM and how it starts it, the /proc readings, and the
ratios of issue 15's table."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench import cases, compare, procstat, report
from bench.harness import KEY, Gateway, Load, gateway_config
from inferq.config.loader import parse_config


def test_inferq_reads_the_bench_config_with_its_options() -> None:
    config = parse_config(gateway_config(9123, slots=4, cache=True, prefix="p", timeout=600))
    (deployment,) = config.groups["bench"]
    assert deployment.api_base == "http://127.0.0.1:9123/v1"
    assert deployment.max_parallel_requests == 4
    assert config.master_key == KEY
    assert config.cache.enabled
    assert config.fabric.key_prefix == "p"
    assert config.fabric.default_timeout == 600


def test_litellm_gets_the_same_model_list_and_key_without_inferq_settings() -> None:
    ours = yaml.safe_load(gateway_config(9123))
    theirs = yaml.safe_load(gateway_config(9123, cache=True, inferq=False))
    assert theirs["model_list"] == ours["model_list"]
    assert theirs["general_settings"] == {"master_key": KEY}
    assert "inferq_settings" not in theirs


def test_a_missing_litellm_venv_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="make bench-compare"):
        compare.litellm_binary(tmp_path / "nowhere")


def test_the_proxy_starts_from_its_own_venv_on_loopback_with_one_worker(tmp_path: Path) -> None:
    venv = tmp_path / "litellm"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "litellm").write_text("#!/bin/sh\n")
    cmd = compare.litellm_command(venv, tmp_path / "c.yaml", 4321, tmp_path / "log.json")
    tail = cmd[cmd.index(str(venv / "bin" / "litellm")) :]
    assert tail[tail.index("--host") + 1] == "127.0.0.1"
    assert tail[tail.index("--port") + 1] == "4321"
    assert tail[tail.index("--num_workers") + 1] == "1"
    assert not compare.DEFAULT_VENV.is_relative_to(Path.cwd())  # never in the project's tree


def test_the_proxy_finds_no_database_to_use() -> None:
    env = compare.litellm_env({"DATABASE_URL": "postgresql://x", "PATH": "/bin"})
    assert "DATABASE_URL" not in env
    assert env["PATH"] == "/bin"


def test_process_trees_count_their_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in procstat.tree(os.getpid())
        usage = procstat.Usage.now({"me": os.getpid(), "child": child.pid})
        assert usage.rss["me"] > usage.rss["child"] > 1  # the tree holds the child's MB too
    finally:
        child.kill()
        child.wait()


def _run(rps32: float, latency_p50: float, cpu: float) -> cases.Figures:
    timing = Load(1, 1.0, latency_p50, latency_p50, latency_p50, latency_p50, 0, [])
    return cases.Figures(timing, timing, {32: rps32}, {32: rps32 / 10}, {"all": cpu})


def test_the_table_shows_inferqs_advantage_round_by_round() -> None:
    direct = cases.Target(Gateway("direct", 1), [_run(20000, 0.1, 0), _run(20000, 0.1, 0)])
    inferq = cases.Target(Gateway("inferq", 2), [_run(500, 2.1, 2), _run(600, 1.1, 1)])
    litellm = cases.Target(Gateway("LiteLLM", 3), [_run(100, 10.1, 8), _run(150, 8.1, 6)])
    text = "\n".join(report.headline(direct, inferq, litellm))
    added = next(line for line in text.splitlines() if line.startswith("added latency"))
    # added: inferq 2.0 and 1.0 ms; LiteLLM 10 and 8 ms; advantage 5x and 8x: median 6.5x.
    assert "1.50 [1.00-2.00]" in added and "9.00 [8.00-10.00]" in added and "6.5" in added
    rps = next(line for line in text.splitlines() if line.startswith("non-stream requests/s"))
    assert "4.5" in rps and "MISSED" in rps  # 5x and 4x: median 4.5x < 5x
