"""Projector: the warm tier in PostgreSQL and the hot task statuses in Redis, built from TASKS,
WORKFLOWS, DELIVERIES, AUDIT, SCHEDULES, ALERTS and the ``triggers``/``subscriptions`` buckets
(see the README). Wiring only."""

from __future__ import annotations

from zhongshu.projector import handlers, resources
from zhongshu.projector.resources import ProjectorDeps
from zhongshu.projector.settings import ProjectorSettings
from zhongshu.runtime import Service


def build_service() -> Service[ProjectorSettings, ProjectorDeps]:
    """A fresh service (tests run several in one process)."""
    service = Service(
        "projector",
        ProjectorSettings,
        resources.lifespan,
        description="Read models in PostgreSQL (warm) and Redis (hot).",
        publishes=[],
    )
    service.ready_when("postgres", resources.postgres_answers)
    handlers.register(service)
    return service


service = build_service()

if __name__ == "__main__":
    service.main()
