"""ingress-dingtalk: DingTalk robot HTTP callbacks and Stream mode in, one normalized event per
platform event out on ``chat.inbound.dingtalk.<tenant>``. Wiring only."""

from __future__ import annotations

from zhongshu.contracts import channels
from zhongshu.ingress_dingtalk import handlers
from zhongshu.ingress_dingtalk.settings import DingTalkIngressSettings
from zhongshu.runtime import Service
from zhongshu.runtime.ingress import IngressGate
from zhongshu.runtime.liveconfig import LiveConfig
from zhongshu.runtime.webhooks import Webhook, WebhookRequest, WebhookResponse

INGRESS = "dingtalk"  # key of the opened resources in service.state
LIVE = "dingtalk_live_config"


def build_service() -> Service:
    """A fresh service (tests run several replicas in one process)."""
    service = Service(
        "ingress-dingtalk",
        DingTalkIngressSettings,
        description="DingTalk HTTP callbacks and Stream mode.",
        publishes=[channels.CHAT_INBOUND, channels.AUDIT],
    )

    async def robot_callback(request: WebhookRequest) -> WebhookResponse:
        return await handlers.robot_callback(service.state[INGRESS], request)

    service.webhooks.append(Webhook(handlers.WEBHOOK_PATH, robot_callback))

    @service.on_startup
    async def open_ingress(svc: Service) -> None:
        settings = svc.settings
        assert isinstance(settings, DingTalkIngressSettings)
        gate = await IngressGate.open(
            service=svc.name, platform="dingtalk", publisher=svc.publisher, js=svc.js
        )
        # The configuration the hub runs with (the `config` bucket, else the file): webhook
        # apps follow every pushed revision; Stream connections are opened for the apps known
        # at start.
        live = await LiveConfig.open(svc.js, path=settings.config)
        ingress = handlers.DingTalkIngress(gate=gate, config=live.current, settings=settings)
        live.subscribe(ingress.reconfigure)
        svc.state[LIVE] = live
        svc.state[INGRESS] = ingress
        handlers.start_streams(ingress, await svc.js.key_value(handlers.LEASES_BUCKET))

    @service.on_shutdown
    async def close_ingress(svc: Service) -> None:
        if INGRESS in svc.state:
            await handlers.stop_streams(svc.state[INGRESS])
        if LIVE in svc.state:
            await svc.state.pop(LIVE).close()

    return service


service = build_service()

if __name__ == "__main__":
    service.main()
