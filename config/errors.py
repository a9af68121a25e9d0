"""Config errors: one exception, carrying every problem found, each with its YAML path.

ConfigError
    .problems: list[(path, message)], e.g. ("model_list[2].litellm_params.api_base", "...")
"""


class ConfigError(Exception):
    """The configuration cannot be used; ``str()`` is the message to show the operator."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{path}: {message}" if path else message for path, message in problems]
        super().__init__(f"invalid config {source}:\n  " + "\n  ".join(lines))
