"""The broker: the only layer that talks to Redis (streams, pub/sub, heartbeats)."""
