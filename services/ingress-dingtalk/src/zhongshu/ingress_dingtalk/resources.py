"""What ingress-dingtalk opens at start and closes at stop, in reverse: the ingress gate, the
running configuration (the `config` bucket, else the file; callback apps follow every pushed
revision) and, for every app that receives through Stream mode (the apps known at start), a
task that holds its connection under a lease."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from nats.js.kv import KeyValue

from zhongshu.contracts.streams import LEASES_KV
from zhongshu.ingress_dingtalk import normalize
from zhongshu.ingress_dingtalk.adapters.lease import Lease, run_while_holding
from zhongshu.ingress_dingtalk.adapters.stream import Frame, StreamClient
from zhongshu.ingress_dingtalk.ingress import DingTalkIngress, stream_frame
from zhongshu.ingress_dingtalk.settings import DingTalkIngressSettings
from zhongshu.runtime.hubconfig import App
from zhongshu.runtime.ingress import IngressGate
from zhongshu.runtime.liveconfig import LiveConfig
from zhongshu.runtime.service import Service


@dataclass
class Streams:
    """The Stream-mode connections, by app: the client, its lease and the task holding both."""

    clients: dict[str, StreamClient] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)


@dataclass(frozen=True)
class DingTalkDeps:
    ingress: DingTalkIngress
    config: LiveConfig
    streams: Streams


DingTalkService = Service[DingTalkIngressSettings, DingTalkDeps]


@contextlib.asynccontextmanager
async def lifespan(svc: DingTalkService) -> AsyncIterator[DingTalkDeps]:
    settings = svc.settings
    gate = await IngressGate.open(
        service=svc.name, platform="dingtalk", publisher=svc.publisher, js=svc.js
    )
    leases = await svc.js.key_value(LEASES_KV.bucket)
    async with contextlib.AsyncExitStack() as stack:
        live = await LiveConfig.on(stack, svc.js, path=settings.config)
        ingress = DingTalkIngress(gate=gate, config=live.current, settings=settings)
        live.subscribe(ingress.reconfigure)
        streams = start_streams(ingress, leases)
        stack.push_async_callback(stop_streams, streams)
        yield DingTalkDeps(ingress, live, streams)


def start_streams(ingress: DingTalkIngress, kv: KeyValue) -> Streams:
    """One task per app that receives through Stream mode: it waits for the app's lease in
    ``leases``, then holds the connection while it renews the lease."""
    settings = ingress.settings
    streams = Streams()
    for name, app in ingress.config.apps.items():
        creds = app.dingtalk
        if creds is None or "stream" not in creds.receive:
            continue

        async def on_frame(frame: Frame, name: str = name, app: App = app) -> dict[str, Any] | None:
            return await stream_frame(ingress, name, app, frame)

        client = StreamClient(
            api_url=settings.dingtalk_api_url,
            client_id=creds.app_key,
            client_secret=creds.app_secret.get_secret_value(),
            handler=on_frame,
            backoff_initial_s=settings.stream_backoff_initial_s,
            backoff_max_s=settings.stream_backoff_max_s,
            name=name,
        )
        lease = Lease(kv, f"{normalize.PLATFORM}.{name}")
        streams.clients[name], streams.leases[name] = client, lease
        streams.tasks[name] = asyncio.create_task(
            run_while_holding(
                lease,
                client.run_forever,
                renew_every_s=settings.stream_lease_renew_s,
                retry_every_s=settings.stream_lease_retry_s,
            ),
            name=f"dingtalk-stream-{name}",
        )
    return streams


async def stop_streams(streams: Streams, *, release: bool = True) -> None:
    """Close every Stream connection; ``release`` hands the leases over at once (a clean
    shutdown), otherwise they lapse after the bucket's TTL (what a crash looks like)."""
    tasks = list(streams.tasks.values())
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)
    streams.tasks.clear()
    if release:
        await asyncio.gather(*(lease.release() for lease in streams.leases.values()))
