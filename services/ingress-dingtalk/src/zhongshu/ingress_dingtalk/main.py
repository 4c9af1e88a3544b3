"""ingress-dingtalk: DingTalk robot HTTP callbacks and Stream mode in, one normalized event per
platform event out on ``chat.inbound.dingtalk.<tenant>``. Wiring only."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from zhongshu.ingress_dingtalk import handlers
from zhongshu.ingress_dingtalk.settings import DingTalkIngressSettings
from zhongshu.runtime import Service
from zhongshu.runtime.hubconfig import load_config
from zhongshu.runtime.ingress import IngressGate

INGRESS = "dingtalk"  # key of the opened resources in service.state


def build_service() -> Service:
    """A fresh service (tests run several replicas in one process)."""
    service = Service("ingress-dingtalk", DingTalkIngressSettings)

    async def robot_callback(request: Request) -> Response:
        return await handlers.robot_callback(service.state[INGRESS], request)

    service.routes.append(Route(handlers.WEBHOOK_PATH, robot_callback, methods=["POST"]))

    @service.on_startup
    async def open_ingress(svc: Service) -> None:
        settings = svc.settings
        assert isinstance(settings, DingTalkIngressSettings)
        gate = await IngressGate.open(
            service=svc.name, platform="dingtalk", publisher=svc.publisher, js=svc.js
        )
        config = load_config(settings.config)
        ingress = handlers.DingTalkIngress(gate=gate, config=config, settings=settings)
        svc.state[INGRESS] = ingress
        handlers.start_streams(ingress, await svc.js.key_value(handlers.LEASES_BUCKET))

    @service.on_shutdown
    async def close_ingress(svc: Service) -> None:
        if INGRESS in svc.state:
            await handlers.stop_streams(svc.state[INGRESS])

    return service


service = build_service()

if __name__ == "__main__":
    service.main()
