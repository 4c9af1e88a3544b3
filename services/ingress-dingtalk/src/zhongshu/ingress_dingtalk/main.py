"""ingress-dingtalk: DingTalk robot HTTP callbacks and Stream mode in, one normalized event per
platform event out on ``chat.inbound.dingtalk.<tenant>``. Wiring only."""

from __future__ import annotations

from zhongshu.contracts import channels
from zhongshu.ingress_dingtalk import handlers, resources
from zhongshu.ingress_dingtalk.resources import DingTalkService
from zhongshu.ingress_dingtalk.settings import DingTalkIngressSettings
from zhongshu.runtime import Service


def build_service() -> DingTalkService:
    """A fresh service (tests run several replicas in one process)."""
    service: DingTalkService = Service(
        "ingress-dingtalk",
        DingTalkIngressSettings,
        resources.lifespan,
        description="DingTalk HTTP callbacks and Stream mode.",
        publishes=[channels.CHAT_INBOUND, channels.AUDIT],
    )
    handlers.register(service)
    return service


service = build_service()

if __name__ == "__main__":
    service.main()
