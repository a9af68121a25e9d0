"""Tenants: virtual keys and what they own.

`vkeys` (key records stored by the SHA-256 of the key, never the key; change announcements on
pub/sub), `teams` (a team's weight in the fair share), `shares` (the fair share of a group and
each process's view of it), `limits` (per-key rpm/tpm/parallel counters, budget spend and failed
authentications, shared by every API process) and `owners` (which key owns each file and
batch).

May import the broker's root modules only (not `broker.jobs`, `broker.batch`, `broker.ops`).
"""
