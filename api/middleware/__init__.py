"""What every request passes through: `gate` (the one ASGI middleware, in front of the FastAPI
app), which checks `auth` (the key) and `body_limit` (413 instead of unbounded memory) and calls
the inference routes directly; `access` (the request id, and one access line per request)."""
