"""Router: whitelist, cluster-wide rate limits and classification of every inbound chat event.
Consumes ``chat.inbound.>``; produces ``chat.command.*``, ``chat.query.*``, ``alert.*``,
``alerting.action.*`` (an admin's click on an alert card), ``audit.*`` and direct replies on
``chat.reply.*`` (see the README). Wiring only."""

from __future__ import annotations

from zhongshu.contracts import channels
from zhongshu.router import handlers, resources
from zhongshu.router.resources import RouterService
from zhongshu.router.rules import RouterRules
from zhongshu.router.settings import RouterSettings
from zhongshu.runtime import Service
from zhongshu.runtime.liveconfig import ConfigSource


def build_service(
    *, config: ConfigSource | None = None, rules: RouterRules | None = None
) -> RouterService:
    """The router service; tests pass a fixed ``config`` and ``rules`` and run several."""
    service: RouterService = Service(
        "router",
        RouterSettings,
        resources.lifespan(config=config, rules=rules),
        description="Whitelist, rate limits, classification.",
        publishes=[
            channels.CHAT_COMMANDS,
            channels.CHAT_QUERIES,
            channels.CHAT_REPLIES,
            channels.ALERTS,
            channels.ALERT_ACTIONS,
            channels.AUDIT,
        ],
    )
    service.readiness_ping("redis", lambda deps: deps.redis)
    handlers.register(service)
    return service


service = build_service()

if __name__ == "__main__":
    service.main()
