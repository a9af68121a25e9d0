"""Who a request is: the master key, or a virtual key with its record."""

from dataclasses import dataclass
from functools import cached_property

from starlette.types import Scope

from inferq.broker.tenants.vkeys import KeyRecord

_SCOPE_KEY = "inferq.principal"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller; `record` is None for the master key (or an open gateway)."""

    record: KeyRecord | None = None
    weight: int = 1  # share of a backend: the key's priority times its team's

    @cached_property
    def admin(self) -> bool:
        """May manage keys, read everyone's usage and see every file and batch."""
        return self.record is None or self.record.admin

    @cached_property
    def key_id(self) -> str | None:
        """The owner name of what this caller creates (None: the master key)."""
        return None if self.record is None else self.record.key_id

    @cached_property
    def token(self) -> str | None:
        """The key's hash, which names it as the owner of files and batches (None: master)."""
        return None if self.record is None else self.record.token

    def may_see(self, owner: str | None) -> bool:
        """True when this caller may see an object owned by `owner` (a key's hash)."""
        return self.admin or (owner is not None and owner == self.token)


MASTER = Principal()


def set_principal(scope: Scope, principal: Principal) -> None:
    """Remember who the request is (the auth middleware does this)."""
    scope[_SCOPE_KEY] = principal


def principal_of(scope: Scope) -> Principal:
    """Who the request is; the master key where no authentication applied (an open gateway)."""
    found: Principal = scope.get(_SCOPE_KEY, MASTER)
    return found
