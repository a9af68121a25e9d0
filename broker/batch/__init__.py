"""Batch work on the job path: submissions without HTTP, and the OpenAI Batch API's state.

`submit` (the direct submission client: a bounded window of batch-lane jobs, results as they
finish, resumable), `batchfile` (OpenAI's batch JSONL lines in and out), `batches` (Batch API
records and the lease of the API process that drives one) and `files` (Batch API files).

May import the broker's root modules, `broker.jobs` and `inferq.config`; not `broker.ops`.
"""
