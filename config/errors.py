"""Config errors: a bad file, carrying every problem found, each with its YAML path; and a
model name the config cannot route.

ConfigError
    .problems: list[(path, message)], e.g. ("model_list[2].litellm_params.api_base", "...")
RouteError                 a request's model cannot be served as asked
  ├── UnknownModel         no model group or alias has that name (.name, .param)
  └── NoUsableGroup        every group of its chain is unavailable (no API key...)
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


class RouteError(Exception):
    """A request's model (or fallbacks) cannot be routed; ``str()`` says why."""


class UnknownModel(RouteError):
    """`name`, given in the request field `param`, is no model group or alias."""

    def __init__(self, name: str, param: str, known: Sequence[str]) -> None:
        super().__init__(
            f"Invalid model name passed in {param}={name}. Available models: {', '.join(known)}"
        )
        self.name = name
        self.param = param


class NoUsableGroup(RouteError):
    """No group of the model's chain can be served right now."""
