"""Running the fabric: who works, how deployments are doing, what was used, what is asked.

`registry` (each worker's heartbeat hash with a TTL), `limits` (per-deployment cooldowns and
rpm/tpm pacing, shared by every worker), `usage` (per-day usage and cost totals and the capped
request log), `status` (the whole fabric read in one pass, for `inferq status` and the
dashboard) and `control` (config reloads announced to, and answered by, every process).

May import the broker's root modules, `broker.jobs` and `inferq.config`; not `broker.batch`.
"""
