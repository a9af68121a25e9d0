"""The dashboard's login cookie: an expiry (and, for an admin virtual key, the key's hash)
signed with HMAC-SHA256 keyed by the master key.

The cookie is never the key itself, so a leaked cookie does not leak the key; it opens only the
dashboard's paths (`/ui`, `/ui/data`), not the API, and stops working when it expires, when the
master key changes, or (for a virtual key's) when that key is revoked or is no longer an admin
key (the auth middleware checks the key's record on every request).
"""

import hashlib
import hmac
import re
import time

COOKIE = "inferq_ui"
PATH = "/ui"
LIFETIME_S = 12 * 3600
_LABEL = b"inferq dashboard session v1:"
_TOKEN = re.compile(r"^[0-9a-f]{64}$")


def issue(master_key: str, now: float | None = None, token: str = "") -> str:
    """A cookie value valid for `LIFETIME_S` from `now`, for the master key or (`token`: its
    hash) an admin virtual key."""
    expires = int((time.time() if now is None else now) + LIFETIME_S)
    if token:
        return f"{expires}.{token}.{_sign(master_key, expires, token)}"
    return f"{expires}.{_sign(master_key, expires)}"


def holder(value: str | None, master_key: str, now: float | None = None) -> str | None:
    """Whose login `value` is: "" for the master key's, the key's hash for a virtual key's;
    None when it was not issued with this master key or has expired."""
    if not value:
        return None
    expires, _, rest = value.partition(".")
    token, _, signature = rest.rpartition(".")
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
        return None
    if token and not _TOKEN.match(token):
        return None
    if int(expires) < (time.time() if now is None else now):
        return None
    expected = _sign(master_key, int(expires), token)
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return None
    return token


def valid(value: str | None, master_key: str, now: float | None = None) -> bool:
    """True when `value` is a login of the master key, issued with it and not expired."""
    return holder(value, master_key, now) == ""


def _sign(master_key: str, expires: int, token: str = "") -> str:
    message = _LABEL + str(expires).encode() + (b"." + token.encode() if token else b"")
    return hmac.new(master_key.encode(), message, hashlib.sha256).hexdigest()
