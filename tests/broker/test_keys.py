"""Key names: one prefix, and a hash tag per model group for Redis Cluster."""

from inferq.broker.keys import Keys


def test_group_keys_share_a_hash_tag() -> None:
    keys = Keys("inferq")
    assert keys.jobs("local-model") == "inferq:{local-model}:jobs"
    assert keys.dead("local-model") == "inferq:{local-model}:dead"
    assert keys.reply("abc") == "inferq:reply:{abc}"  # its own slot: a sharded channel
    assert Keys("other").worker("w1") == "other:worker:w1"
