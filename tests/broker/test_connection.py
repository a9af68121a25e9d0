"""REDIS_URL forms: one server, or a primary found through Sentinel."""

import subprocess
import sys

import pytest

from inferq.broker.connection import SentinelURL, connect


def test_a_plain_url_is_not_a_sentinel_url() -> None:
    assert SentinelURL.parse("redis://127.0.0.1:6379/0") is None
    assert SentinelURL.parse("rediss://:pw@cache.example:6380/2") is None


def test_a_sentinel_url_names_its_sentinels_service_db_and_credentials() -> None:
    url = "rediss+sentinel://app:s%40cret@10.0.0.1:26379,[::1]:26380/inferq/3?sentinel_password=sp"
    parsed = SentinelURL.parse(url)
    assert parsed == SentinelURL(
        hosts=(("10.0.0.1", 26379), ("::1", 26380)),
        service="inferq",
        db=3,
        username="app",
        password="s@cret",
        sentinel_password="sp",
        tls=True,
    )
    assert "s@cret" not in repr(parsed) and "sp'" not in repr(parsed)
    assert SentinelURL.parse("redis+sentinel://h:1/svc") == SentinelURL((("h", 1),), "svc")


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h:26379",  # no service
        "redis+sentinel://h:26379/svc/db",  # db is not a number
        "redis+sentinel://h/svc",  # no port
        "redis+sentinel:///svc",  # no sentinel
    ],
)
def test_an_unusable_sentinel_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        SentinelURL.parse(url)
    with pytest.raises(ValueError):
        connect(url)


def test_the_cli_refuses_a_bad_sentinel_url_without_a_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "inferq.cli", "status"],
        env={"REDIS_URL": "redis+sentinel://:hunter2@h/svc", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("inferq: REDIS_URL: ")
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr
