"""What ingress-feishu opens at start and closes at stop, in reverse: the ingress gate, the
running configuration (the `config` bucket, else the file; webhook apps follow every pushed
revision), the watched grants (alert buttons' toasts) and a long connection for every app that
receives that way (the apps known at start)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import httpx

from zhongshu.ingress_feishu.adapters.long_connection import LongConnection
from zhongshu.ingress_feishu.ingress import FeishuIngress
from zhongshu.ingress_feishu.settings import FeishuIngressSettings
from zhongshu.runtime.cancellation import stop_task
from zhongshu.runtime.grants import GrantBook
from zhongshu.runtime.ingress import IngressGate
from zhongshu.runtime.liveconfig import LiveConfig
from zhongshu.runtime.service import Service


@dataclass(frozen=True)
class FeishuDeps:
    ingress: FeishuIngress
    config: LiveConfig
    connections: Mapping[str, LongConnection]  # by app


FeishuService = Service[FeishuIngressSettings, FeishuDeps]


@contextlib.asynccontextmanager
async def lifespan(svc: FeishuService) -> AsyncIterator[FeishuDeps]:
    settings = svc.settings
    gate = await IngressGate.open(
        service=svc.name, platform="feishu", publisher=svc.publisher, js=svc.js
    )
    async with contextlib.AsyncExitStack() as stack:
        live = await LiveConfig.on(stack, svc.js, path=settings.config_path)
        # Grants only shape an alert button's toast (the router decides): not waited for, and
        # a hub without the bucket yet keeps answering from the configuration.
        grants = GrantBook.watching(svc.js)
        grants.watched.start()
        stack.push_async_callback(grants.watched.stop)
        ingress = FeishuIngress(settings, live.current, gate, lambda: svc.nc.is_connected, grants)
        live.subscribe(ingress.reconfigure)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=10))
        connections = {
            app.name: LongConnection(
                base_url=settings.feishu_base_url,
                app_id=app.app_id,
                app_secret=app.app_secret,
                handle=functools.partial(ingress.pushed, app),
                http=http,
            )
            for app in ingress.apps.values()
            if app.long_connection
        }
        for name, connection in connections.items():
            task = asyncio.create_task(connection.run(), name=f"feishu-long-connection-{name}")
            stack.push_async_callback(stop_task, task)
        yield FeishuDeps(ingress, live, connections)
