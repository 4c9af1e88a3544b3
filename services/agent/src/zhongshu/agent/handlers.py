"""The agent's consumers: chat commands and task requests, each handled by ``runs.Agent``."""

from __future__ import annotations

from typing import Any

from zhongshu.agent.resources import AgentDeps, AgentService
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import CommandRequested, TaskRequested
from zhongshu.runtime import Delivery

# A model call may wait for its QPS slot and then stream for up to MODEL_TIMEOUT_S: the
# handler keeps its message alive meanwhile (keepalive), so ack_wait only matters after a crash.
ACK_WAIT_S = 30.0
# A command whose model call fails is answered with a failure notice and acked; what is
# retried is infrastructure trouble (Redis, the bus): give it a few minutes before the DLQ.
BACKOFF_S = (1.0, 5.0, 15.0, 60.0, 120.0)
# Inputs handled at once per replica: more than MAX_CONCURRENT, so cache hits and tool calls
# go on while model calls wait for their slot.
CONCURRENCY = 16


def register(service: AgentService) -> None:
    options: dict[str, Any] = {
        "concurrency": CONCURRENCY,
        "ack_wait_s": ACK_WAIT_S,
        "backoff_s": BACKOFF_S,
    }

    @service.consumes(
        stream=streams.CHAT_COMMANDS.name,
        subjects=subjects.ALL_CHAT_COMMANDS,
        durable="agent-commands",
        event=CommandRequested,
        **options,
    )
    async def on_command(
        deps: AgentDeps, env: Envelope[CommandRequested], delivery: Delivery
    ) -> None:
        await deps.agent.on_command(env, delivery)

    @service.consumes(
        stream=streams.TASKS.name,
        subjects=subjects.ALL_TASK_REQUESTED,
        durable="agent-tasks",
        event=TaskRequested,
        **options,
    )
    async def on_task(deps: AgentDeps, env: Envelope[TaskRequested], delivery: Delivery) -> None:
        await deps.agent.on_task(env, delivery)
