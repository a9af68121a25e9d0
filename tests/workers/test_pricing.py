"""Cost follows the model id and the config's prices, never where the deployment listens."""

from inferq.config.loader import parse_config
from inferq.workers.pricing import cost

CONFIG = """
model_list:
  - model_name: tunnelled
    litellm_params: {model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:9999/v1", api_key: k}
  - model_name: priced-local
    litellm_params:
      model: openai//models/x.gguf
      api_base: "http://localhost:8080/v1"
      input_cost_per_token: 0.001
      output_cost_per_token: 0.002
  - model_name: local
    litellm_params: {model: openai//models/x.gguf, api_base: "http://127.0.0.1:8080/v1"}
"""


def test_a_priced_model_costs_its_price_even_through_a_local_address() -> None:
    config = parse_config(CONFIG)
    [tunnelled] = config.groups["tunnelled"]
    [priced] = config.groups["priced-local"]
    [local] = config.groups["local"]
    assert cost(tunnelled, 1_000_000, 1_000_000) == 0.15 + 0.60  # gpt-4o-mini's list price
    assert cost(priced, 10, 10) == 10 * 0.001 + 10 * 0.002
    assert cost(local, 1000, 1000) == 0.0  # a model without a price costs nothing
