"""The agent's consumers and resources: chat commands and task requests, each handled by
``runs.Agent``; Redis, the HTTP pool, the live configuration and MCP servers opened at start."""

from __future__ import annotations

from typing import cast

import httpx
from redis.asyncio import Redis

from zhongshu.agent.adapters.inference_cache import InferenceCache
from zhongshu.agent.adapters.memory import ConversationMemory
from zhongshu.agent.adapters.taskstatus import TaskStatusStore
from zhongshu.agent.inference import Inference
from zhongshu.agent.models import Models, effective_setup
from zhongshu.agent.runs import Agent
from zhongshu.agent.settings import AgentSettings
from zhongshu.agent.tools.mcp import McpConnections
from zhongshu.contracts import channels, streams, subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import CommandRequested, TaskRequested
from zhongshu.runtime import Delivery, Service
from zhongshu.runtime.liveconfig import ConfigSource, LiveConfig

AGENT = "agent"  # key of the Agent in service.state
# A model call may wait for its QPS slot and then stream for up to MODEL_TIMEOUT_S: the
# handler keeps its message alive meanwhile (keepalive), so ack_wait only matters after a crash.
ACK_WAIT_S = 30.0
# A command whose model call fails is answered with a failure notice and acked; what is
# retried is infrastructure trouble (Redis, the bus): give it a few minutes before the DLQ.
BACKOFF_S = (1.0, 5.0, 15.0, 60.0, 120.0)
# Inputs handled at once per replica: more than MAX_CONCURRENT, so cache hits and tool calls
# go on while model calls wait for their slot.
CONCURRENCY = 16
# The replica computing an answer renews its cache lock every third of this; when it dies, the
# others take over within this many seconds instead of waiting out a whole model budget.
CACHE_LOCK_TTL_S = 5.0


def build_service(*, config: ConfigSource | None = None) -> Service:
    """The agent service; tests pass a fixed ``config``."""
    service = Service(
        "agent",
        AgentSettings,
        description="LLM answers to commands and task requests: tools, memory, inference cache.",
        publishes=[channels.TASK_EVENTS, channels.CHAT_REPLIES],
    )

    @service.on_startup
    async def open_resources(svc: Service) -> None:
        settings = cast(AgentSettings, svc.settings)
        redis: Redis = Redis.from_url(settings.redis_url)
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.agent_fetch_timeout_s),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=50),
        )
        source = config if config is not None else await LiveConfig.open(svc.js)
        current = source.current
        mcp = McpConnections(current.agent.tools.mcp)
        await mcp.open()
        svc.state.update(redis=redis, http=http, config=source, mcp=mcp)
        models = Models(redis, http)
        models.refresh(effective_setup(current, settings))
        svc.state[AGENT] = Agent(
            settings=settings,
            config=source,
            models=models,
            inference=Inference(
                InferenceCache(
                    redis,
                    ttl_s=current.agent.cache.ttl_s,
                    lock_ttl_s=CACHE_LOCK_TTL_S,
                )
            ),
            memory=ConversationMemory(
                redis,
                ttl_s=current.agent.memory.ttl_s,
                token_budget=current.agent.memory.token_budget,
            ),
            statuses=TaskStatusStore(redis),
            http=http,
            extra_tools=mcp.tools,
        )

    @service.on_shutdown
    async def close_resources(svc: Service) -> None:
        mcp = svc.state.pop("mcp", None)
        if mcp is not None:
            await mcp.close()
        source = svc.state.pop("config", None)
        if source is not None and config is None:
            await source.close()
        http = svc.state.pop("http", None)
        if http is not None:
            await http.aclose()
        redis = svc.state.pop("redis", None)
        if redis is not None:
            await redis.aclose()

    service.readiness_ping("redis")

    @service.consumer(
        stream=streams.CHAT_COMMANDS.name,
        subjects=subjects.ALL_CHAT_COMMANDS,
        durable="agent-commands",
        event=CommandRequested,
        concurrency=CONCURRENCY,
        ack_wait_s=ACK_WAIT_S,
        backoff_s=BACKOFF_S,
    )
    async def on_command(env: Envelope[CommandRequested], delivery: Delivery) -> None:
        agent: Agent = service.state[AGENT]
        await agent.on_command(env, delivery)

    @service.consumer(
        stream=streams.TASKS.name,
        subjects=subjects.ALL_TASK_REQUESTED,
        durable="agent-tasks",
        event=TaskRequested,
        concurrency=CONCURRENCY,
        ack_wait_s=ACK_WAIT_S,
        backoff_s=BACKOFF_S,
    )
    async def on_task(env: Envelope[TaskRequested], delivery: Delivery) -> None:
        agent: Agent = service.state[AGENT]
        await agent.on_task(env, delivery)

    return service
