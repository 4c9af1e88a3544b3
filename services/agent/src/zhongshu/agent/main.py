"""Agent: LLM answers under a cluster-wide QPS cap, with cache, memory, tools and a task
lifecycle. Consumes ``chat.command.>`` and ``task.requested.>``; produces ``task.event.*`` and
``chat.reply.*``. Wiring only."""

from __future__ import annotations

from zhongshu.agent import handlers, resources
from zhongshu.agent.resources import AgentService
from zhongshu.agent.settings import AgentSettings
from zhongshu.contracts import channels
from zhongshu.runtime import Service
from zhongshu.runtime.liveconfig import ConfigSource


def build_service(*, config: ConfigSource | None = None) -> AgentService:
    """The agent service; tests pass a fixed ``config``."""
    service: AgentService = Service(
        "agent",
        AgentSettings,
        resources.lifespan(config=config),
        description="LLM answers to commands and task requests: tools, memory, inference cache.",
        publishes=[channels.TASK_EVENTS, channels.CHAT_REPLIES, channels.AUDIT],
    )
    service.readiness_ping("redis", lambda deps: deps.redis)
    handlers.register(service)
    return service


service = build_service()

if __name__ == "__main__":
    service.main()
