"""What echo decides, with no I/O: the reply to an inbound message."""

from __future__ import annotations

from zhongshu.contracts.events import MessageReceived, ReplyGenerated
from zhongshu.contracts.ids import derive_msg_id

STAGE = "echo"


def reply_to(message: MessageReceived, envelope_id: str) -> ReplyGenerated:
    """Echo the text back into the same chat, as the one final chunk of a reply whose id is
    derived from the inbound event (a redelivery yields the same reply id)."""
    reply_id = derive_msg_id(envelope_id, STAGE)
    return ReplyGenerated(
        reply_id=reply_id,
        in_reply_to=envelope_id,
        platform=message.platform,
        app=message.app,
        tenant=message.tenant,
        chat_id=message.chat_id,
        reply_handle=message.reply_handle,
        kind="text",
        text=f"echo: {message.text}",
        chunk_index=0,
        final=True,
    )
