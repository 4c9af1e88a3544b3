"""DingTalk payloads to zhongshu events, pure: the robot message (HTTP callback and Stream
CALLBACK carry the same body, protocols §2.1), the card callback and any other Stream EVENT.

Each result carries the deterministic envelope id and the dedupe key, so a platform
redelivery maps to the same ids and is published once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from zhongshu.contracts.events import (
    AttachmentRef,
    CardActionReceived,
    Event,
    Mention,
    MessageReceived,
    PlatformEventReceived,
    ReplyHandle,
    Sender,
)
from zhongshu.contracts.events.chat import (
    REPLY_HANDLE_DINGTALK_ROBOT,
    REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK,
    ChatKind,
)
from zhongshu.contracts.ids import derive_msg_id

_T = TypeVar("_T")

PLATFORM: Final = "dingtalk"
BOT_MESSAGE_TOPIC = "/v1.0/im/bot/messages/get"
CARD_CALLBACK_TOPIC = "/v1.0/card/instances/callback"

# DingTalk `msgtype` → `MessageReceived.message_kind`; others pass through as given (open set).
_KINDS = {
    "text": "text",
    "richText": "rich_text",
    "picture": "image",
    "file": "file",
    "audio": "audio",
    "video": "video",
    "markdown": "markdown",
}
_ATTACHMENT_KINDS = {"picture": "image", "file": "file", "audio": "audio", "video": "video"}


class MalformedPayload(ValueError):
    """The body is JSON but not a payload we can turn into an event (the message says why)."""


@dataclass(frozen=True, slots=True)
class Inbound:
    """One platform event, ready for the ingress gate."""

    event: Event
    event_id: str
    """The envelope id and `Nats-Msg-Id`: the same for every redelivery, and scoped per app
    (two bots in one group see the same msgId)."""
    tenant: str
    conversation_id: str | None = None
    occurred_at: datetime | None = None


def parse_json_object(raw: bytes | str) -> dict[str, Any]:
    """A JSON object, or :class:`MalformedPayload`."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the parser goes (`[[[[…`) is not a payload.
        raise MalformedPayload("body is not valid JSON") from exc
    if not isinstance(value, dict):
        raise MalformedPayload("body is not a JSON object")
    return value


def event_id(app: str, platform_id: str) -> str:
    return derive_msg_id(f"{PLATFORM}:{app}", platform_id)


def robot_message(payload: dict[str, Any], *, app: str, tenant: str) -> Inbound:
    """A robot message (HTTP callback body, or the `data` of a Stream bot-message frame)."""
    msg_id = _required_str(payload, "msgId")
    conversation_id = _required_str(payload, "conversationId")
    msgtype = _text(payload, "msgtype") or "unknown"
    text, attachments = _content(msgtype, payload)
    sent_at = _from_ms(payload, "createAt")
    mentions = tuple(_mentions(payload))
    sender = _sender(payload)
    chat_kind = _chat_kind(_typed(payload, "conversationType", (str, int)))
    event = MessageReceived(
        platform=PLATFORM,
        app=app,
        tenant=tenant,
        chat_id=conversation_id,
        chat_kind=chat_kind,
        sender=sender,
        platform_event_id=msg_id,
        platform_message_id=msg_id,
        reply_handle=_reply_handle(payload, conversation_id, chat_kind, sender),
        text=text,
        message_kind=_KINDS.get(msgtype, msgtype),
        mentions=mentions,
        mentions_bot=_typed(payload, "isInAtList", bool) is True
        or any(m.is_bot_self for m in mentions),
        attachments=attachments,
        sent_at=sent_at,
        raw_event_type=BOT_MESSAGE_TOPIC,
    )
    return Inbound(
        event=event,
        event_id=event_id(app, msg_id),
        tenant=tenant,
        conversation_id=conversation_id,
        occurred_at=sent_at,
    )


def card_callback(payload: dict[str, Any], *, app: str, tenant: str, delivery_id: str) -> Inbound:
    """A card callback (Stream topic `/v1.0/card/instances/callback`). `delivery_id` is the
    frame's messageId, which a redelivery repeats; the payload itself has no event id."""
    user_id = _required_str(payload, "userId")
    content = _typed(payload, "content", (str, dict))
    if isinstance(content, str):
        content = parse_json_object(content) if content else None
    private = _typed(content or {}, "cardPrivateData", dict) or {}
    params = _typed(private, "params", dict) or {}
    action_ids = _typed(private, "actionIds", list) or []
    chat_id = _text(payload, "spaceId") or _text(payload, "openConversationId")
    event = CardActionReceived(
        platform=PLATFORM,
        app=app,
        tenant=tenant,
        chat_id=chat_id,
        user=Sender(id=user_id, staff_id=user_id),
        action=dict(params),
        platform_event_id=delivery_id,
        reply_handle=ReplyHandle(kind=REPLY_HANDLE_DINGTALK_ROBOT, chat_id=chat_id or None),
        action_name=str(action_ids[0]) if action_ids else None,
        card_id=_text(payload, "outTrackId") or None,
    )
    return Inbound(
        event=event,
        event_id=event_id(app, delivery_id),
        tenant=tenant,
        conversation_id=chat_id or None,
    )


def platform_event(
    headers: dict[str, Any], payload: dict[str, Any], *, app: str, tenant: str
) -> Inbound:
    """Any Stream EVENT frame, kept whole so event-triggered rules can match it later."""
    platform_id = _text(headers, "eventId") or _required_str(headers, "messageId")
    occurred_at = _from_ms(headers, "eventBornTime")
    event = PlatformEventReceived(
        platform=PLATFORM,
        app=app,
        tenant=tenant,
        event_type=_text(headers, "eventType") or _text(headers, "topic") or "unknown",
        platform_event_id=platform_id,
        payload=payload,
        occurred_at=occurred_at,
    )
    return Inbound(
        event=event,
        event_id=event_id(app, platform_id),
        tenant=tenant,
        occurred_at=occurred_at,
    )


# --- pieces ---------------------------------------------------------------------------------


def _content(msgtype: str, payload: dict[str, Any]) -> tuple[str, tuple[AttachmentRef, ...]]:
    if msgtype == "text":
        return _text(_typed(payload, "text", dict) or {}, "content").strip(), ()
    content = _typed(payload, "content", (str, dict))
    if isinstance(content, str):  # some deliveries carry `content` as a JSON string
        content = parse_json_object(content)
    if content is None:
        return "", ()
    if msgtype == "richText":
        return _rich_text(_typed(content, "richText", list) or [])
    kind = _ATTACHMENT_KINDS.get(msgtype)
    if kind is None:
        return "", ()
    code = _text(content, "downloadCode")
    attachments = (AttachmentRef(kind=kind, key=code, name=_text(content, "fileName") or None),)
    # Audio comes with DingTalk's speech recognition: the user's words, as text.
    text = _text(content, "recognition").strip() if msgtype == "audio" else ""
    return text, attachments if code else ()


def _rich_text(parts: list[Any]) -> tuple[str, tuple[AttachmentRef, ...]]:
    texts: list[str] = []
    pictures: list[AttachmentRef] = []
    for part in parts:
        if not isinstance(part, dict):
            raise MalformedPayload(f"richText holds a {type(part).__name__}, not an object")
        texts.append(_text(part, "text"))
        code = _text(part, "downloadCode") or _text(part, "pictureDownloadCode")
        if code and (part.get("type") in (None, "picture")):
            pictures.append(AttachmentRef(kind="image", key=code))
    return "".join(texts).strip(), tuple(pictures)


def _mentions(payload: dict[str, Any]) -> list[Mention]:
    bot = _text(payload, "chatbotUserId")
    found = []
    for user in _typed(payload, "atUsers", list) or ():
        if not isinstance(user, dict):
            raise MalformedPayload(f"atUsers holds a {type(user).__name__}, not an object")
        dingtalk_id, staff_id = _text(user, "dingtalkId"), _text(user, "staffId")
        if not (dingtalk_id or staff_id):
            continue
        found.append(
            Mention(id=staff_id or dingtalk_id, is_bot_self=bool(bot) and dingtalk_id == bot)
        )
    return found


def _sender(payload: dict[str, Any]) -> Sender:
    staff_id = _text(payload, "senderStaffId")
    sender_id = _text(payload, "senderId")
    if not (staff_id or sender_id):
        raise MalformedPayload("payload has neither senderStaffId nor senderId")
    return Sender(
        id=staff_id or sender_id,
        name=_text(payload, "senderNick"),
        staff_id=staff_id or None,
    )


def _reply_handle(
    payload: dict[str, Any], conversation_id: str, chat_kind: ChatKind, sender: Sender
) -> ReplyHandle:
    """The sessionWebhook while it lasts; after that the notifier needs the robot OpenAPI,
    which addresses a group by its conversation id but a one-to-one chat by the user's staff
    id (its conversation id also starts with ``cid``), so both are kept here."""
    # Only a staff id addresses a user: senderId is encrypted and no send API takes it.
    user_id = sender.staff_id if chat_kind == "p2p" else None
    url = _text(payload, "sessionWebhook")
    if not url:
        return ReplyHandle(
            kind=REPLY_HANDLE_DINGTALK_ROBOT,
            chat_id=conversation_id,
            chat_kind=chat_kind,
            user_id=user_id,
        )
    return ReplyHandle(
        kind=REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK,
        url=url,
        chat_id=conversation_id,
        expires_at=_from_ms(payload, "sessionWebhookExpiredTime"),
        chat_kind=chat_kind,
        user_id=user_id,
    )


def _chat_kind(value: Any) -> ChatKind:
    return "group" if str(value) == "2" else "p2p"


def _from_ms(container: dict[str, Any], key: str) -> datetime | None:
    """Epoch milliseconds (a number, or digits in a string) as a time; absent is None."""
    value = _typed(container, key, (int, float, str))
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        raise MalformedPayload(f"{key} is not a time in milliseconds") from None


def _typed(container: dict[str, Any], key: str, kind: type[_T] | tuple[type, ...]) -> _T | None:
    """``container[key]`` if it has the expected type, None when absent or null. Any other type
    is refused here, where the field is named: code further on may then trust the type (a
    number in ``atUsers`` once crashed the callback into a 500)."""
    value = container.get(key)
    if value is None:
        return None
    if isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
        return value  # type: ignore[return-value]
    raise MalformedPayload(f"{key} is a {type(value).__name__}")


def _text(container: dict[str, Any], key: str) -> str:
    """A string field; absent or null reads as empty."""
    return _typed(container, key, str) or ""


def _required_str(payload: dict[str, Any], key: str) -> str:
    value = _text(payload, key)
    if not value:
        raise MalformedPayload(f"payload has no {key}")
    return value
