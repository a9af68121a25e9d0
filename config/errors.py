"""Config errors: one exception, carrying every problem found, each with its YAML path.

ConfigError
    .problems: list[(path, message)], e.g. ("model_list[2].litellm_params.api_base", "...")
"""

from collections.abc import Sequence

# Names pydantic puts in an error location for the branch of a union it tried.
_UNION_BRANCHES = frozenset({"str", "int", "float", "bool", "none", "AliasSpec"})


def error_path(loc: Sequence[int | str]) -> str:
    """A pydantic error location as a path an operator reads: `model_list[2].litellm_params.x`
    (`dotted=True` style for request bodies is the caller's join)."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _UNION_BRANCHES or part.startswith(("list[", "dict[", "function-")):
            continue
        else:
            path = f"{path}.{part}" if path else part
    return path


class ConfigError(Exception):
    """The configuration cannot be used; ``str()`` is the message to show the operator."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{path}: {message}" if path else message for path, message in problems]
        super().__init__(f"invalid config {source}:\n  " + "\n  ".join(lines))
