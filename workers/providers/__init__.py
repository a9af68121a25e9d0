"""Backend providers behind one small interface (`Provider`)."""

from inferq.config.model import Deployment
from inferq.config.model import Provider as ProviderKind
from inferq.workers.providers.anthropic import AnthropicProvider
from inferq.workers.providers.base import Chunk, Provider
from inferq.workers.providers.openai import OpenAICompatible
from inferq.workers.transport import BackendHTTP

__all__ = ["Chunk", "Provider", "provider_for"]


def provider_for(deployment: Deployment, http: BackendHTTP) -> Provider:
    """The provider implementation for a deployment's wire protocol."""
    if deployment.provider is ProviderKind.ANTHROPIC:
        return AnthropicProvider(http)
    return OpenAICompatible(http)
