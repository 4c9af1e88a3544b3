"""ingress-feishu: Feishu/Lark event and card webhooks → ``chat.inbound.feishu.<tenant>``.
Wiring only; ``zhongshu up`` finds ``service`` through the ``zhongshu.services`` entry point."""

from __future__ import annotations

from zhongshu.contracts import channels
from zhongshu.ingress_feishu import handlers, resources
from zhongshu.ingress_feishu.resources import FeishuService
from zhongshu.ingress_feishu.settings import FeishuIngressSettings
from zhongshu.runtime.service import Service


def build_service() -> FeishuService:
    """A fresh service (tests run several replicas in one process)."""
    service: FeishuService = Service(
        "ingress-feishu",
        FeishuIngressSettings,
        resources.lifespan,
        description="Feishu events and card callbacks, webhook and long connection.",
        publishes=[channels.CHAT_INBOUND, channels.AUDIT],
    )
    handlers.register(service)
    return service


service = build_service()

if __name__ == "__main__":
    service.main()
