"""Feishu sends (protocols §1.4): the app bot API (reply in thread under the original message,
send to a chat, replace a card the app sent), CardKit streaming cards, and signed custom-bot
webhooks, through ``zhongshu.platforms.feishu`` (the cached ``tenant_access_token``, fetched
again once when refused; every answer a value). Every app send carries the reply id as
``uuid``, which Feishu deduplicates for an hour, and a card update sets the same content
again: a resend after a crash is safe."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import replace
from typing import Any

from zhongshu.notifier.adapters.results import Delivered, Rejected, SendResult
from zhongshu.notifier.message import Outgoing
from zhongshu.platforms import Credentials, FeishuClient
from zhongshu.platforms.results import CallResult, Ok

MAX_TEXT_BYTES = 150_000
MAX_CARD_BYTES = 30_000
MAX_UUID = 50
STREAM_ELEMENT = "md_stream"
STREAMING_CLOSED = "300309"  # CardKit: an update of a card whose streaming mode was closed


def custom_bot_sign(secret: str, timestamp_s: int) -> str:
    """Feishu's custom-bot ``sign``: the string-to-sign is the HMAC key, the message empty."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def request_uuid(key: str) -> str:
    """Feishu's ``uuid`` is at most 50 characters: longer keys are hashed."""
    return key if len(key) <= MAX_UUID else hashlib.sha256(key.encode()).hexdigest()[:40]


def card_json(message: Outgoing) -> dict[str, Any]:
    if message.card is not None:
        return message.card
    card: dict[str, Any] = {
        "config": {"wide_screen_mode": True, "update_multi": True},
        "elements": [{"tag": "markdown", "content": message.text}],
    }
    if message.title or message.colour:
        card["header"] = {
            "title": {"tag": "plain_text", "content": message.title or "zhongshu"},
            "template": message.colour or "blue",
        }
    buttons: list[dict[str, Any]] = [
        {"tag": "button", "text": {"tag": "plain_text", "content": t}, "url": u}
        for t, u in message.buttons
    ]
    # A button with a ``value`` (and no URL) calls back: card.action.trigger carries the value.
    buttons += [
        {
            "tag": "button",
            "text": {"tag": "plain_text", "content": action.label},
            "type": action.style,
            "value": dict(action.value),
        }
        for action in message.actions
    ]
    if buttons:
        card["elements"].append({"tag": "action", "actions": buttons})
    return card


def shared_card(card: dict[str, Any]) -> dict[str, Any] | Rejected:
    """The card to put in place of another with ``PATCH /im/v1/messages/{id}``: only shared
    cards (``config.update_multi: true``, before and after) can be updated for everyone, so the
    flag is added when the producer left it out; a card that asks for ``false`` is refused
    here rather than by the platform. Template and CardKit references carry no config."""
    if card.get("type") in ("template", "card"):
        return card
    config = card.get("config")
    config = dict(config) if isinstance(config, dict) else {}
    if config.get("update_multi") is False:
        return Rejected("a card update needs config.update_multi: true", "update_multi")
    config["update_multi"] = True
    return {**card, "config": config}


def render(message: Outgoing) -> tuple[str, dict[str, Any]]:
    """(msg_type, content object) for the app API."""
    if message.kind == "card" or message.colour is not None:
        return "interactive", card_json(message)
    if message.kind == "markdown":
        lines = [[{"tag": "md", "text": message.text}]]
        return "post", {"zh_cn": {"title": message.title or "", "content": lines}}
    mentions = "".join(f'<at user_id="{u}"></at> ' for u in message.mention_user_ids)
    return "text", {"text": mentions + message.text}


def delivered(result: CallResult) -> SendResult:
    """A send's result: what Feishu accepted names the message it created (if any)."""
    if not isinstance(result, Ok):
        return result
    data = result.payload.get("data")
    message_id = data.get("message_id") if isinstance(data, dict) else None
    return Delivered(str(message_id) if message_id else None)


class FeishuAdapter:
    platform = "feishu"
    idempotent = True  # the request uuid makes a resend within an hour a no-op
    max_text_bytes = MAX_TEXT_BYTES

    def __init__(self, feishu: FeishuClient) -> None:
        self._feishu = feishu

    async def reply(
        self, *, app_id: str, app_secret: str, message_id: str, message: Outgoing
    ) -> SendResult:
        """Reply under the original message (in its thread)."""
        msg_type, content = render(message)
        body = {"msg_type": msg_type, "content": json.dumps(content, ensure_ascii=False)}
        if message.idempotency_key:
            body["uuid"] = request_uuid(message.idempotency_key)
        path = f"/open-apis/im/v1/messages/{message_id}/reply"
        return delivered(await self._call(app_id, app_secret, "POST", path, body))

    async def send_to_chat(
        self, *, app_id: str, app_secret: str, chat_id: str, message: Outgoing
    ) -> SendResult:
        msg_type, content = render(message)
        body = {
            "receive_id": chat_id,
            "msg_type": msg_type,
            "content": json.dumps(content, ensure_ascii=False),
        }
        if message.idempotency_key:
            body["uuid"] = request_uuid(message.idempotency_key)
        path = "/open-apis/im/v1/messages?receive_id_type=chat_id"
        return delivered(await self._call(app_id, app_secret, "POST", path, body))

    async def update_card(
        self, *, app_id: str, app_secret: str, message_id: str, message: Outgoing
    ) -> SendResult:
        """Replace the card of interactive message ``message_id`` (sent by this app within 14
        days, 5 updates/s per message). The card is replaced whole, so an over-long one is
        refused, never split into parts that would overwrite each other."""
        card = shared_card(card_json(message))
        if isinstance(card, Rejected):
            return card
        body = {"content": json.dumps(card, ensure_ascii=False)}
        path = f"/open-apis/im/v1/messages/{message_id}"
        result = await self._call(app_id, app_secret, "PATCH", path, body)
        if isinstance(result, Ok):
            return Delivered(message_id)  # the answer names no message: it is the same one
        if isinstance(result, Rejected) and result.too_long:
            return replace(result, too_long=False)
        return result

    async def send_custom_bot(
        self, hook_token: str, secret: str | None, message: Outgoing
    ) -> SendResult:
        msg_type, content = render(message)
        body: dict[str, Any] = {"msg_type": msg_type}
        body["card" if msg_type == "interactive" else "content"] = content
        if secret:
            timestamp = int(time.time())
            body |= {"timestamp": str(timestamp), "sign": custom_bot_sign(secret, timestamp)}
        path = f"/open-apis/bot/v2/hook/{hook_token}"
        return delivered(await self._feishu.call_without_token("POST", path, json=body))

    # --- CardKit streaming (typewriter cards) ---------------------------------------------

    async def create_streaming_card(
        self, *, app_id: str, app_secret: str, text: str, title: str | None
    ) -> tuple[str | None, SendResult]:
        """A card 2.0 in streaming mode holding ``text``; (card id, result)."""
        card: dict[str, Any] = {
            "schema": "2.0",
            "config": {"streaming_mode": True, "update_multi": True},
            "body": {
                "elements": [{"tag": "markdown", "element_id": STREAM_ELEMENT, "content": text}]
            },
        }
        if title:
            card["header"] = {"title": {"tag": "plain_text", "content": title}}
        body = {"type": "card_json", "data": json.dumps(card, ensure_ascii=False)}
        result = await self._call(app_id, app_secret, "POST", "/open-apis/cardkit/v1/cards", body)
        if not isinstance(result, Ok):
            return None, result
        data = result.payload.get("data")
        card_id = data.get("card_id") if isinstance(data, dict) else None
        return (str(card_id) if card_id else None), Delivered(None)

    async def stream_text(
        self, *, app_id: str, app_secret: str, card_id: str, text: str, sequence: int
    ) -> SendResult:
        """Replace the streamed element with the full text so far (only the new tail types out)."""
        path = f"/open-apis/cardkit/v1/cards/{card_id}/elements/{STREAM_ELEMENT}/content"
        body = {"content": text, "sequence": sequence}
        return delivered(await self._call(app_id, app_secret, "PUT", path, body))

    async def close_stream(
        self, *, app_id: str, app_secret: str, card_id: str, sequence: int
    ) -> SendResult:
        body = {
            "settings": json.dumps({"config": {"streaming_mode": False}}),
            "sequence": sequence,
        }
        path = f"/open-apis/cardkit/v1/cards/{card_id}/settings"
        return delivered(await self._call(app_id, app_secret, "PATCH", path, body))

    async def _call(
        self, app_id: str, app_secret: str, method: str, path: str, body: dict[str, Any]
    ) -> CallResult:
        """With the app's token, fetched again once if Feishu refuses it."""
        return await self._feishu.call(Credentials(app_id, app_secret), method, path, json=body)
