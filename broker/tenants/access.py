"""What a virtual key may use: the model names it may ask for and the groups that may serve
them. Shared by the API (HTTP requests) and the direct submission client (batch work).

An alias counts as itself: a key allowed `fast` may ask for `fast` and be served by the chain
the config gives `fast`, but not ask for the groups of that chain by name; a fallback (the
request's own, or the config's) never leads into a group the key may not use.
"""

from collections.abc import Sequence

from inferq.broker.tenants.vkeys import KeyRecord
from inferq.config import GatewayConfig
from inferq.config.errors import RouteError


class NotPermitted(RouteError):
    """The key may not use this model; ``str()`` names the models it may use."""


def allowed_names(record: KeyRecord, config: GatewayConfig) -> list[str]:
    """The model names (groups and aliases) the key may ask for."""
    if not record.models:
        return config.public_models()
    return [m for m in record.models if m in config.groups or m in config.aliases]


def permitted_groups(record: KeyRecord, config: GatewayConfig) -> set[str]:
    """The groups that may serve the key: those it names, and the configured chains of the
    aliases it names."""
    groups = {m for m in record.models if m in config.groups}
    for name in record.models:
        alias = config.aliases.get(name)
        if alias is not None:
            groups.update(alias.chain)
    return groups


def restrict(
    record: KeyRecord, config: GatewayConfig, model: str, chain: Sequence[str]
) -> list[str]:
    """`chain` cut to the groups the key may use; NotPermitted when it may not ask for `model`
    (or none of the chain is left)."""
    if not record.models:
        return list(chain)
    if model not in record.models:
        names = ", ".join(allowed_names(record, config)) or "none"
        raise NotPermitted(f"This key may not use model {model}. Models it may use: {names}.")
    allowed = permitted_groups(record, config)
    kept = [g for g in chain if g in allowed]
    if not kept:
        raise NotPermitted(f"This key may not use model {model}.")
    return kept
