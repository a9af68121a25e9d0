"""The dashboard's login cookie: an expiry signed with HMAC-SHA256 keyed by the master key.

The cookie is never the key itself, so a leaked cookie does not leak the key; it opens only the
dashboard's paths (`/ui`, `/ui/data`), not the API, and stops working when it expires or when
the master key changes.
"""

import hashlib
import hmac
import time

COOKIE = "inferq_ui"
PATH = "/ui"
LIFETIME_S = 12 * 3600
_LABEL = b"inferq dashboard session v1:"


def issue(master_key: str, now: float | None = None) -> str:
    """A cookie value valid for `LIFETIME_S` from `now`."""
    expires = int((time.time() if now is None else now) + LIFETIME_S)
    return f"{expires}.{_sign(master_key, expires)}"


def valid(value: str | None, master_key: str, now: float | None = None) -> bool:
    """True when `value` was issued with this master key and has not expired."""
    if not value:
        return False
    expires, _, signature = value.partition(".")
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
        return False
    if int(expires) < (time.time() if now is None else now):
        return False
    expected = _sign(master_key, int(expires))
    return hmac.compare_digest(signature.encode(), expected.encode())


def _sign(master_key: str, expires: int) -> str:
    message = _LABEL + str(expires).encode()
    return hmac.new(master_key.encode(), message, hashlib.sha256).hexdigest()
