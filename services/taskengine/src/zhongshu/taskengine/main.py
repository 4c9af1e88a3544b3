"""Task engine: event triggers and DAG workflow runs, one message per step. Consumes
``events.>``, ``task.requested.>``, ``task.event.>`` and ``workflow.>``; produces
``task.requested.*``, ``task.event.*``, ``workflow.*`` and ``chat.reply.*`` (see the README).
Wiring only."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from zhongshu.contracts import channels
from zhongshu.runtime import Service
from zhongshu.runtime.liveconfig import ConfigSource
from zhongshu.taskengine import handlers
from zhongshu.taskengine.engine import Engine, open_engine
from zhongshu.taskengine.settings import TaskEngineSettings


def build_service(*, config: ConfigSource | None = None) -> Service[TaskEngineSettings, Engine]:
    """The task engine; tests pass a fixed hub ``config`` (apps, for notify steps)."""

    @contextlib.asynccontextmanager
    async def lifespan(svc: Service[TaskEngineSettings, Engine]) -> AsyncIterator[Engine]:
        async with open_engine(svc, config) as engine:
            yield engine

    service = Service(
        "taskengine",
        TaskEngineSettings,
        lifespan,
        description="Event triggers and workflow runs.",
        publishes=[
            channels.TASK_REQUESTED,
            channels.TASK_EVENTS,
            channels.WORKFLOW_RUNS,
            channels.WORKFLOW_STEPS,
            channels.CHAT_REPLIES,
            channels.AUDIT,
        ],
    )
    handlers.register(service)
    return service


service = build_service()

if __name__ == "__main__":
    service.main()
