"""Which Redis a REDIS_URL names: one server, or a primary behind sentinels."""

import pytest

from inferq.broker.connection import SentinelTarget, sentinel_target


def test_a_plain_url_names_no_sentinels() -> None:
    assert sentinel_target("redis://127.0.0.1:6379/0") is None
    assert sentinel_target("rediss://:secret@cache.example:6380/2") is None


def test_a_sentinel_url_names_sentinels_service_db_and_credentials() -> None:
    assert sentinel_target("redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster/3") == (
        SentinelTarget(
            sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26380)), service="mymaster", db=3
        )
    )
    tls = sentinel_target("rediss+sentinel://app:p%40ss@[::1]:5000,sentinel-b/main")
    assert tls == SentinelTarget(
        sentinels=(("::1", 5000), ("sentinel-b", 26379)),
        service="main",
        db=0,
        username="app",
        password="p@ss",
        ssl=True,
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h:26379", "host:port[,host:port...]/service[/db]"),
        ("redis+sentinel:///mymaster", "host:port[,host:port...]/service[/db]"),
        ("redis+sentinel://h:port/mymaster", "not host:port: 'h:port'"),
        ("redis+sentinel://h/mymaster/zero", "the database must be a number, not 'zero'"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_saying_why(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=r".*") as exc:
        sentinel_target(url)
    assert says in str(exc.value)
