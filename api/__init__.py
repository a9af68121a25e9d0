"""The HTTP facade: OpenAI-compatible routes that turn requests into jobs and replies into SSE.

What lives where:

- here: `app` (`create_app`: routes, error handlers, lifespan), `main` (uvicorn), `state` (what
  the routes share, built once in the lifespan) and `errors` (API errors and the one place they
  become OpenAI error bodies);
- `middleware/`: what every request passes through: authentication, the body size limit, its
  request id and access line;
- `inference/`: the interactive path: the inference routes (OpenAI and Anthropic), a body read
  into a job, the cache policy, the shared flow (cache, listen, enqueue, await) and the relay of
  replies as JSON or SSE;
- `batch/`: the OpenAI Batch API routes and the driver that runs each batch;
- `accounting/`: usage records, Prometheus metrics and budgets;
- `ops/`: for operators: health probes, `/usage` and `/metrics`, and the dashboard at `/ui`.

May import `inferq.broker` and `inferq.config`; never `redis` (only the broker talks to Redis),
`inferq.workers` or `inferq.cli`.
"""
