"""Tenants: virtual keys and what they own.

`vkeys` (key records stored by the SHA-256 of the key, never the key; change announcements on
pub/sub), `limits` (per-key rpm/tpm/parallel counters and budget spend, shared by every API
process) and `owners` (which key owns each file and batch).

May import the broker's root modules only (not `broker.jobs`, `broker.batch`, `broker.ops`).
"""
