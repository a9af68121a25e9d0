"""The broker: the only layer that talks to Redis, and the only one that imports `redis`.

What lives where:

- here, the foundation every part uses: `keys` (every key and channel name), `connection`
  (pools, and redis-py errors translated once into `errors`), `scripts` (Lua by SHA),
  `subscriber` (a background pub/sub subscription), `messages` (jobs and replies as they travel)
  and `bodies` (OpenAI request bodies, checked the same way for HTTP and batch input);
- `jobs/`: the path of one job, whichever lane it is in: queued, taken by a worker, answered,
  cancelled, its durable result, and the response cache in front of the queue;
- `batch/`: batch work over that path: the direct submission client, batch files, Batch API
  records and files;
- `ops/`: running the fabric: the worker registry, deployment cooldowns and pacing, usage
  totals, the status view and config reloads.

May import: `inferq.config` and itself; never `inferq.api`, `inferq.workers` or `inferq.cli`.
Inside, the root modules import no sub-package; `jobs` imports neither `batch` nor `ops`.
"""
