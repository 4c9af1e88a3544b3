"""Echo's handler: decode (done by the runtime), decide, publish."""

from __future__ import annotations

import asyncio
from typing import Any

from zhongshu.contracts import channels, streams, subjects
from zhongshu.contracts import envelope as wire
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import MessageReceived
from zhongshu.echo import domain
from zhongshu.echo.settings import EchoSettings
from zhongshu.runtime import Delivery, Service

service = Service(
    "echo",
    EchoSettings,
    description="The runtime's fault-test subject.",
    publishes=[channels.CHAT_REPLIES],
)


# chat.inbound carries card actions too: decode by type and echo only messages.
@service.consumer(
    stream=streams.CHAT_INBOUND.name,
    subjects=subjects.ALL_CHAT_INBOUND,
    decode=wire.decode_any,
)
async def on_message(env: Envelope[Any], delivery: Delivery) -> None:
    if not isinstance(env.data, MessageReceived):
        return
    settings = service.settings
    assert isinstance(settings, EchoSettings)
    if settings.echo_delay_s:
        await asyncio.sleep(settings.echo_delay_s)
    reply = domain.reply_to(env.data, env.id)
    out = wire.make_envelope(
        reply,
        id=reply.reply_id,
        source="zhongshu/echo",
        tenant=env.tenant,
        conversation_id=env.conversation_id,
        correlation_id=env.correlation_id or env.id,
    )
    await delivery.publish_envelope(subjects.chat_reply(reply.platform, reply.tenant), out)
