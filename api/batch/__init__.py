"""The OpenAI Batch API over HTTP: `routes` (`/v1/files`, `/v1/batches`) and `driver` (runs each
batch through its lifecycle, from whichever API process holds its lease)."""
