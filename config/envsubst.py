"""Environment references in config values: `${NAME}`, `${NAME:-default}`, `os.environ/NAME`."""

import re
from collections.abc import Mapping
from typing import Any

_BRACED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_LITELLM_PREFIX = "os.environ/"


def substitute(
    node: Any, env: Mapping[str, str], path: str, problems: list[tuple[str, str]]
) -> Any:
    """Return `node` with every environment reference replaced; record undefined names."""
    if isinstance(node, dict):
        return {k: substitute(v, env, _join(path, str(k)), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, env, f"{path}[{i}]", problems) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node
    if node.startswith(_LITELLM_PREFIX):
        name = node[len(_LITELLM_PREFIX) :]
        if name not in env:
            problems.append((path, f"environment variable {name} is not set"))
            return None
        return env[name]

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if default is not None:
            return env.get(name) or default  # as in a POSIX shell: empty counts as unset
        if name in env:
            return env[name]
        problems.append((path, f"environment variable {name} is not set (no default given)"))
        return ""

    return _BRACED.sub(replace, node)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
