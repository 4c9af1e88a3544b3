"""Echo's handler: decode (done by the runtime), decide, publish."""

from __future__ import annotations

import asyncio
from typing import Any

from zhongshu.contracts import envelope as wire
from zhongshu.contracts import streams, subjects
from zhongshu.contracts.envelope import Envelope
from zhongshu.contracts.events import MessageReceived
from zhongshu.echo import domain
from zhongshu.echo.settings import EchoSettings
from zhongshu.runtime import Delivery, Service


def register(service: Service[EchoSettings, None]) -> None:
    # chat.inbound carries card actions too: decode by type and echo only messages.
    @service.consumes(
        stream=streams.CHAT_INBOUND.name,
        subjects=subjects.ALL_CHAT_INBOUND,
        decode=wire.decode_any,
    )
    async def on_message(deps: None, env: Envelope[Any], delivery: Delivery) -> None:
        if not isinstance(env.data, MessageReceived):
            return
        if service.settings.echo_delay_s:
            await asyncio.sleep(service.settings.echo_delay_s)
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
