"""ingress-feishu: Feishu/Lark event and card webhooks → ``chat.inbound.feishu.<tenant>``.
Wiring only; ``zhongshu up`` finds ``service`` through the ``zhongshu.services`` entry point."""

from __future__ import annotations

from zhongshu.contracts import channels
from zhongshu.ingress_feishu.handlers import close_ingress, open_ingress, webhooks
from zhongshu.ingress_feishu.settings import FeishuIngressSettings
from zhongshu.runtime.service import Service


def build_service() -> Service:
    """A fresh service (tests run several replicas in one process)."""
    service = Service(
        "ingress-feishu",
        FeishuIngressSettings,
        description="Feishu events and card callbacks, webhook and long connection.",
        publishes=[channels.CHAT_INBOUND, channels.AUDIT],
    )
    service.on_startup(open_ingress)
    service.on_shutdown(close_ingress)
    service.webhooks.extend(webhooks(service))
    return service


service = build_service()

if __name__ == "__main__":
    service.main()
