"""Echo's pure decision."""

from __future__ import annotations

import msgspec

from zhongshu.contracts.events import MessageReceived
from zhongshu.contracts.examples import example
from zhongshu.echo import domain


def test_reply_echoes_the_text_into_the_same_chat() -> None:
    message = msgspec.structs.replace(example(MessageReceived), text="ping")
    reply = domain.reply_to(message, "evt-1")
    assert reply.text == "echo: ping"
    assert (reply.chat_id, reply.tenant, reply.platform) == (
        message.chat_id,
        message.tenant,
        message.platform,
    )
    assert reply.final


def test_a_redelivered_message_gets_the_same_reply_id() -> None:
    message = example(MessageReceived)
    assert domain.reply_to(message, "evt-1").reply_id == domain.reply_to(message, "evt-1").reply_id
    assert domain.reply_to(message, "evt-1").reply_id != domain.reply_to(message, "evt-2").reply_id
