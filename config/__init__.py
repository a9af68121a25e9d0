"""Configuration: LiteLLM-format YAML parsed once into frozen, typed objects."""

from inferq.config.errors import ConfigError
from inferq.config.loader import load_config, parse_config
from inferq.config.model import (
    Alias,
    CacheConfig,
    Deployment,
    FabricConfig,
    GatewayConfig,
    Route,
    RouterConfig,
)
from inferq.config.runtime import RuntimeEnv, runtime_env

__all__ = [
    "Alias",
    "CacheConfig",
    "ConfigError",
    "Deployment",
    "FabricConfig",
    "GatewayConfig",
    "Route",
    "RouterConfig",
    "RuntimeEnv",
    "load_config",
    "parse_config",
    "runtime_env",
]
