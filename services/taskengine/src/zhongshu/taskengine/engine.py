"""What every handler of the engine shares: its resources, opened by the service's lifespan
and closed after its consumers have drained (outputs go through the runtime's ``Outbox``, in
the input's tenant and correlation under deterministic ids)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from zhongshu.contracts import streams
from zhongshu.platforms.egress import guarded_client, live_policy
from zhongshu.runtime import Service
from zhongshu.runtime.liveconfig import ConfigSource, config_source
from zhongshu.taskengine.adapters.definitions import DefinitionStore
from zhongshu.taskengine.adapters.runlog import RunLog
from zhongshu.taskengine.adapters.trigger_table import TriggerTable
from zhongshu.taskengine.settings import TaskEngineSettings

SOURCE = "zhongshu/taskengine"
HTTP_TIMEOUT_S = 30.0  # per request; a step's own timeout_s bounds the whole step


@dataclass(frozen=True)
class Engine:
    settings: TaskEngineSettings
    runlog: RunLog
    definitions: DefinitionStore
    triggers: TriggerTable
    config: ConfigSource
    http: httpx.AsyncClient
    """collect's requests (to URLs under ``ZHONGSHU_TASKENGINE_COLLECT_ALLOW``)."""
    callback_http: httpx.AsyncClient
    """notify's signed callbacks: public addresses only, unless ``callbacks.allow_internal``
    allows more (``platforms.egress``); redirects are not followed, a signed POST is not
    replayed to another host."""


@contextlib.asynccontextmanager
async def open_engine(
    svc: Service[TaskEngineSettings, Engine], config: ConfigSource | None = None
) -> AsyncIterator[Engine]:
    """The engine on ``svc``'s bus; ``config`` fixed (tests) or the live one, which it closes."""
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            httpx.AsyncClient(timeout=httpx.Timeout(HTTP_TIMEOUT_S), follow_redirects=True)
        )
        config = await config_source(stack, svc.js, config)
        live = config
        callback_http = await stack.enter_async_context(
            guarded_client(
                live_policy(lambda: live.current.callbacks.allow_internal),
                timeout=httpx.Timeout(HTTP_TIMEOUT_S),
                follow_redirects=False,
            )
        )
        triggers = TriggerTable(svc.js)
        stack.push_async_callback(triggers.close)
        await triggers.open()
        yield Engine(
            settings=svc.settings,
            runlog=RunLog(svc.js, svc.publisher),
            definitions=DefinitionStore(await svc.js.key_value(streams.WORKFLOWS_KV.bucket)),
            triggers=triggers,
            config=config,
            http=http,
            callback_http=callback_http,
        )
