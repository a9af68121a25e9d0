"""What a call cost: config prices (`input_cost_per_token`/`output_cost_per_token`), else a
built-in price table for common cloud models, else zero.

The price follows the model id, never where the deployment listens: `gpt-4o-mini` reached
through a proxy or tunnel on this machine costs what `gpt-4o-mini` costs (key budgets rely on
it), while a local model (a `.gguf`, `llama3`) matches no price and costs nothing.
"""

import functools

from inferq.config import Deployment

# USD per million tokens (input, output), longest matching prefix of the upstream model id wins.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o1-mini": (1.10, 4.40),
    "o1": (15.00, 60.00),
    "o3-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "o4-mini": (1.10, 4.40),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
    "text-embedding-ada-002": (0.10, 0.0),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-haiku": (0.25, 1.25),
    "claude-3-opus": (15.00, 75.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-opus": (15.00, 75.00),
}


def prices(deployment: Deployment) -> tuple[float, float]:
    """USD per token (input, output) for a deployment."""
    if deployment.input_cost_per_token is not None or deployment.output_cost_per_token is not None:
        return deployment.input_cost_per_token or 0.0, deployment.output_cost_per_token or 0.0
    return _listed(deployment.upstream_model)


@functools.lru_cache(maxsize=1024)  # asked for every request: the table scan is done once a model
def _listed(model: str) -> tuple[float, float]:
    """USD per token (input, output) from the price table, by the longest matching prefix."""
    model = model.lower()
    match = max((p for p in PRICES if model.startswith(p)), key=len, default=None)
    if match is None:
        return 0.0, 0.0
    per_million_in, per_million_out = PRICES[match]
    return per_million_in / 1e6, per_million_out / 1e6


def cost(deployment: Deployment, prompt_tokens: int, completion_tokens: int) -> float:
    """USD for one call."""
    per_in, per_out = prices(deployment)
    return prompt_tokens * per_in + completion_tokens * per_out
