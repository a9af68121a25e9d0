"""What every request passes through: `auth` (the key), `body_limit` (413 instead of unbounded
memory) and `access` (the request id, and one access line per request). Plain ASGI classes."""
