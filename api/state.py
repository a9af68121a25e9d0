"""What the routes share, built once in the app's lifespan and stored on `app.state`."""

from dataclasses import dataclass

from starlette.requests import Request

from broker.connection import Redis
from broker.keys import Keys
from broker.replies import ReplyDispatcher
from config import GatewayConfig


@dataclass
class Gateway:
    """The API process's resources: config, Redis client and reply dispatcher."""

    config: GatewayConfig
    redis: Redis
    keys: Keys
    dispatcher: ReplyDispatcher


def gateway(request: Request) -> Gateway:
    """The Gateway of the app serving `request`."""
    gw: Gateway = request.app.state.gateway
    return gw
