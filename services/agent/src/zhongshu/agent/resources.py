"""What the agent opens at start and closes after its consumers have drained: Redis (QPS
schedule, inference cache, memory, task statuses), one HTTP pool (the models and the fetch
tool), the live configuration unless a test fixes it, and the configured MCP servers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

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
from zhongshu.platforms.egress import guarded_client, live_policy
from zhongshu.runtime import Service
from zhongshu.runtime.liveconfig import ConfigSource, config_source
from zhongshu.runtime.service import Lifespan

# The replica computing an answer renews its cache lock every third of this; when it dies, the
# others take over within this many seconds instead of waiting out a whole model budget.
CACHE_LOCK_TTL_S = 5.0


@dataclass(frozen=True)
class AgentDeps:
    agent: Agent
    redis: Redis


AgentService = Service[AgentSettings, AgentDeps]


def lifespan(*, config: ConfigSource | None) -> Lifespan[AgentSettings, AgentDeps]:
    """``config`` fixed by a test, else the live configuration."""

    @contextlib.asynccontextmanager
    async def open_resources(svc: AgentService) -> AsyncIterator[AgentDeps]:
        settings = svc.settings
        async with AsyncExitStack() as stack:
            redis = await stack.enter_async_context(Redis.from_url(settings.redis_url))
            http = await stack.enter_async_context(
                httpx.AsyncClient(
                    timeout=httpx.Timeout(settings.agent_fetch_timeout_s),
                    limits=httpx.Limits(max_connections=100, max_keepalive_connections=50),
                )
            )
            source = await config_source(stack, svc.js, config)
            current = source.current
            # URLs the model chooses: public addresses only, unless the operator allowed more.
            fetch_http = await stack.enter_async_context(
                guarded_client(
                    live_policy(lambda: source.current.agent.tools.fetch_allow_internal),
                    timeout=httpx.Timeout(settings.agent_fetch_timeout_s),
                    limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
                )
            )
            mcp = McpConnections(current.agent.tools.mcp)
            stack.push_async_callback(mcp.close)
            await mcp.open()
            models = Models(redis, http)
            models.refresh(effective_setup(current, settings))
            cache = InferenceCache(
                redis, ttl_s=current.agent.cache.ttl_s, lock_ttl_s=CACHE_LOCK_TTL_S
            )
            # Answers go out before they are stored: the stores still going on finish before
            # Redis closes.
            stack.push_async_callback(cache.drain)
            agent = Agent(
                settings=settings,
                config=source,
                models=models,
                inference=Inference(cache),
                memory=ConversationMemory(
                    redis,
                    ttl_s=current.agent.memory.ttl_s,
                    token_budget=current.agent.memory.token_budget,
                ),
                statuses=TaskStatusStore(redis),
                http=http,
                fetch_http=fetch_http,
                extra_tools=mcp.tools,
            )
            yield AgentDeps(agent=agent, redis=redis)

    return open_resources
