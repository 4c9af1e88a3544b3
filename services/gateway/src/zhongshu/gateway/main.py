"""gateway: the public OpenAPI HTTP API (tasks, schedules, triggers, workflows, subscriptions,
quotas) with JWT bearer auth, served on the service's HTTP port next to /healthz (`zhongshu up`
routes `/api/`, `/openapi.json`, `/docs` and `/` of port 8000 here). Wiring only; `zhongshu up`
finds ``service`` through the ``zhongshu.services`` entry point."""

from __future__ import annotations

from starlette.routing import Mount

from zhongshu.contracts import channels
from zhongshu.gateway import resources
from zhongshu.gateway.app import build_app
from zhongshu.gateway.resources import GatewayService
from zhongshu.gateway.settings import GatewaySettings
from zhongshu.runtime.service import Service


def build_service() -> GatewayService:
    """A fresh service and its app (tests run several in one process)."""
    service: GatewayService = Service(
        "gateway",
        GatewaySettings,
        resources.lifespan,
        description="HTTP API: tasks, schedules, triggers, workflows, subscriptions.",
        publishes=[
            channels.TASK_REQUESTED,
            channels.TASK_EVENTS,
            channels.SCHEDULES,
            channels.AUDIT,
        ],
    )
    service.readiness_ping("redis", lambda gw: gw.redis)
    service.ready_when("postgres", lambda gw: gw.warm.ping())
    # After /healthz, /readyz and /metrics, everything else is the API.
    service.routes.append(Mount("/", app=build_app(lambda: service.deps)))
    return service


service = build_service()

if __name__ == "__main__":
    service.main()
