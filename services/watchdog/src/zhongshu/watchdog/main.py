"""watchdog: raises warning, error and critical alerts from heartbeats, the host, the bus and the
security audit, and keeps every alert's lifecycle (docs/operations/alerts.md). Wiring only."""

from __future__ import annotations

from zhongshu.contracts import channels
from zhongshu.runtime import Service
from zhongshu.runtime.liveconfig import ConfigSource
from zhongshu.watchdog import handlers, resources
from zhongshu.watchdog.resources import WatchdogService
from zhongshu.watchdog.settings import WatchdogSettings


def build_service(*, config: ConfigSource | None = None) -> WatchdogService:
    """A fresh service (tests pass a fixed ``config`` and run several)."""
    service: WatchdogService = Service(
        "watchdog",
        WatchdogSettings,
        resources.lifespan(config=config),
        description="Alerts on resources, services down and security events; alert lifecycle.",
        publishes=[channels.ALERTS, channels.ALERT_STATES, channels.AUDIT],
    )
    service.ready_when("checks", resources.checks_run)
    handlers.register(service)
    return service


service = build_service()

if __name__ == "__main__":
    service.main()
