"""Configuration: LiteLLM-format YAML parsed once into frozen, typed objects."""

from config.errors import ConfigError
from config.loader import load_config, parse_config
from config.model import (
    Alias,
    CacheConfig,
    Deployment,
    FabricConfig,
    GatewayConfig,
    Route,
    RouterConfig,
)
from config.runtime import RuntimeEnv, runtime_env

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
