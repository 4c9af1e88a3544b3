"""Feishu event payloads → zhongshu chat events, pure: messages of every type users send,
mentions, card clicks, the bot joining or leaving a chat, and any other event kept whole.

Input is a verified, decrypted envelope (schema 2.0 ``{"schema","header","event"}`` or the
legacy 1.0 ``{"uuid","type":"event_callback","event"}``); output says which platform id makes
the event unique, so ingress can publish it once."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from zhongshu.contracts.events import (
    REPLY_HANDLE_FEISHU_MESSAGE,
    AttachmentRef,
    BotMembershipChanged,
    CardActionReceived,
    ChatKind,
    Mention,
    MessageReceived,
    PlatformEventReceived,
    ReplyHandle,
    Sender,
)
from zhongshu.runtime.ingress import Rejected

MESSAGE_RECEIVED = "im.message.receive_v1"
BOT_ADDED = "im.chat.member.bot.added_v1"
BOT_REMOVED = "im.chat.member.bot.deleted_v1"
CARD_ACTION = "card.action.trigger"
ALL = "@_all"
_PLACEHOLDER = re.compile(r"@_user_\d+|@_all")
_SPACES = re.compile(r"[ \t]{2,}")
# Feishu `message_type` → MESSAGE_KINDS where the names differ; others pass through.
_KINDS = {"media": "video"}
# Content keys that hold readable text in types without a dedicated rule.
_TEXT_KEYS = ("title", "text", "content", "topic", "summary", "name", "template")

_MAX_DEPTH = 64
_T = TypeVar("_T")

Normalized = MessageReceived | CardActionReceived | BotMembershipChanged | PlatformEventReceived


@dataclass(frozen=True)
class BotIdentity:
    """How to recognise the receiving bot in ``mentions[]``: its open_id (preferred), else its
    display name (open_ids may differ between bots' views in multi-bot groups)."""

    open_id: str | None = None
    name: str | None = None

    def is_me(self, open_id: str | None, name: str) -> bool:
        if self.open_id:
            return open_id == self.open_id
        return bool(self.name) and name == self.name


@dataclass(frozen=True)
class Context:
    app: str
    tenant: str
    bot: BotIdentity = BotIdentity()


@dataclass(frozen=True)
class Result:
    event: Normalized
    unique_id: str
    """The platform id that makes it one event: message_id for messages (the platform may
    re-push a message under a new event_id), else event_id (2.0), uuid (1.0) or card token."""
    conversation_id: str | None = None


def normalize_event(payload: dict[str, Any], ctx: Context) -> Result:
    """An event subscription payload (webhook or long connection)."""
    header = _typed(payload, "header", dict)
    if header is not None:
        event_type = _required(header, "event_type")
        event_id = _required(header, "event_id")
        occurred = _from_millis(header, "create_time")
    elif payload.get("type") == "event_callback":
        return _legacy_event(payload, ctx)
    else:
        raise Rejected(400, "malformed body", "neither a 2.0 header nor a 1.0 event_callback")
    event = _obj(payload, "event")
    if event_type == MESSAGE_RECEIVED:
        return _message(event, event_id, ctx)
    if event_type in (BOT_ADDED, BOT_REMOVED):
        chat_id = _required(event, "chat_id")
        membership = BotMembershipChanged(
            platform="feishu",
            app=ctx.app,
            tenant=ctx.tenant,
            chat_id=chat_id,
            change="added" if event_type == BOT_ADDED else "removed",
            platform_event_id=event_id,
            operator=_sender(_obj(event, "operator_id")),
            chat_name=_str(event, "name"),
            occurred_at=occurred,
        )
        return Result(membership, event_id, chat_id)
    if event_type == CARD_ACTION:
        return normalize_card(payload, ctx)
    return _kept_as_is(ctx, event_type, event_id, event, occurred)


def normalize_card(payload: dict[str, Any], ctx: Context) -> Result:
    """A card action: ``card.action.trigger`` (2.0) or the older callback, whose only unique
    value is the card's update ``token``."""
    header = _typed(payload, "header", dict)
    if header is not None:
        event_id = _required(header, "event_id")
        event = _obj(payload, "event")
        user = _sender(_obj(event, "operator"))
        context = _obj(event, "context")
        chat_id, message_id = _str(context, "open_chat_id"), _str(context, "open_message_id")
        token = _str(event, "token")
    else:
        event = payload
        token = _str(payload, "token")
        event_id = token or _required(payload, "open_message_id")
        user = _sender(payload)
        chat_id, message_id = _str(payload, "open_chat_id"), _str(payload, "open_message_id")
    if user is None:
        raise Rejected(400, "malformed body", "card action without an operator")
    action = _obj(event, "action")
    value = action.get("value")  # any JSON the card's author put on the button
    card = CardActionReceived(
        platform="feishu",
        app=ctx.app,
        tenant=ctx.tenant,
        chat_id=chat_id or "",
        user=user,
        action=value if isinstance(value, dict) else ({} if value is None else {"value": value}),
        platform_event_id=event_id,
        reply_handle=ReplyHandle(
            kind=REPLY_HANDLE_FEISHU_MESSAGE, message_id=message_id, chat_id=chat_id
        ),
        action_tag=_str(action, "tag"),
        action_name=_str(action, "name"),
        option=_typed(action, "option", str),
        form_value=_typed(action, "form_value", dict),
        message_id=message_id,
        token=token,
    )
    return Result(card, event_id, chat_id)


# ---------------------------------------------------------------------------------- messages


def _message(event: dict[str, Any], event_id: str, ctx: Context) -> Result:
    message = _obj(event, "message")
    message_id = _required(message, "message_id")
    chat_id = _required(message, "chat_id")
    sender = _sender(_obj(_obj(event, "sender"), "sender_id"))
    if sender is None:
        raise Rejected(400, "malformed body", "message without a sender id")
    feishu_type = _str(message, "message_type") or "unknown"
    content = _content(_typed(message, "content", (str, dict)))
    mentions = _Mentions(_typed(message, "mentions", list) or [], ctx.bot)
    text, attachments = _render(feishu_type, content, mentions)
    normalized = MessageReceived(
        platform="feishu",
        app=ctx.app,
        tenant=ctx.tenant,
        chat_id=chat_id,
        chat_kind=_chat_kind(_str(message, "chat_type")),
        sender=sender,
        platform_event_id=event_id,
        platform_message_id=message_id,
        reply_handle=ReplyHandle(
            kind=REPLY_HANDLE_FEISHU_MESSAGE, message_id=message_id, chat_id=chat_id
        ),
        text=text,
        message_kind=_KINDS.get(feishu_type, feishu_type),
        mentions=mentions.listed(),
        mentions_bot=mentions.bot,
        attachments=attachments,
        thread_id=_str(message, "thread_id"),
        root_id=_str(message, "root_id"),
        parent_id=_str(message, "parent_id"),
        sent_at=_from_millis(message, "create_time"),
        raw_event_type=MESSAGE_RECEIVED,
    )
    return Result(normalized, message_id, chat_id)


class _Mentions:
    """``mentions[]`` keyed by placeholder, and the text each placeholder becomes."""

    def __init__(self, raw: list[Any], bot: BotIdentity) -> None:
        self.by_key: dict[str, Mention] = {}
        for item in raw:
            if not isinstance(item, dict):
                raise Rejected(400, "malformed body", "a mention is not an object")
            key = _str(item, "key")
            if key is None:
                continue
            ids = _obj(item, "id")
            open_id = _str(ids, "open_id")
            name = _str(item, "name") or ""
            self.by_key[key] = Mention(
                id=open_id or _str(ids, "union_id") or _str(ids, "user_id") or "",
                name=name,
                is_bot_self=bot.is_me(open_id, name),
            )
        self.everyone = False

    @property
    def bot(self) -> bool:
        return any(m.is_bot_self for m in self.by_key.values())

    def listed(self) -> tuple[Mention, ...]:
        found = tuple(self.by_key.values())
        return (*found, Mention(id="all", name="all")) if self.everyone else found

    def resolve(self, key: str, name: str = "") -> str:
        """What a placeholder reads as: gone for the bot itself, ``@name`` for others."""
        if key == ALL:
            self.everyone = True
            return "@all"
        mention = self.by_key.get(key)
        if mention is None:
            return f"@{name}" if name else ""
        return "" if mention.is_bot_self else f"@{mention.name or name}"

    def substitute(self, text: str) -> str:
        if "@_" not in text:
            return text
        return _PLACEHOLDER.sub(lambda match: self.resolve(match.group(0)), text)


def _render(
    kind: str, content: dict[str, Any], mentions: _Mentions
) -> tuple[str, tuple[AttachmentRef, ...]]:
    """Plain text and attachment references for one message's content."""
    if kind == "text":
        return _tidy(mentions.substitute(_str(content, "text") or "")), ()
    if kind == "post":
        return _post(content, mentions)
    if kind == "image":
        return "", _refs(("image", _str(content, "image_key"), None))
    if kind in ("file", "audio", "sticker"):
        return "", _refs((kind, _str(content, "file_key"), _str(content, "file_name")))
    if kind == "media":
        return "", _refs(("video", _str(content, "file_key"), _str(content, "file_name")))
    if kind in ("share_chat", "share_user"):
        return "", ()
    # interactive, merge_forward, location, system, todo, vote and newer kinds: whatever text
    # the content carries, in document order.
    return _tidy(mentions.substitute("\n".join(_texts(content)))), ()


def _post(content: dict[str, Any], mentions: _Mentions) -> tuple[str, tuple[AttachmentRef, ...]]:
    body = content
    if "content" not in body:  # a post as sent, wrapped in a locale: {"zh_cn": {...}}
        body = next((v for v in content.values() if isinstance(v, dict)), {})
    lines: list[str] = []
    refs: list[tuple[str, str | None, str | None]] = []
    title = _str(body, "title")
    if title:
        lines.append(title)
    for paragraph in _typed(body, "content", list) or ():
        if not isinstance(paragraph, list):
            raise Rejected(400, "malformed body", "a post paragraph is not a list")
        parts: list[str] = []
        for element in paragraph:
            if not isinstance(element, dict):
                raise Rejected(400, "malformed body", "a post element is not an object")
            tag = element.get("tag")
            if tag in ("text", "a", "md", "code_block"):
                parts.append(_str(element, "text") or _str(element, "href") or "")
            elif tag == "at":
                key = _str(element, "user_id") or ""
                parts.append(mentions.resolve(key, _str(element, "user_name") or ""))
            elif tag == "img":
                refs.append(("image", _str(element, "image_key"), None))
            elif tag == "media":
                refs.append(("video", _str(element, "file_key"), None))
            elif tag == "emotion":
                parts.append(f"[{_str(element, 'emoji_type') or 'emoji'}]")
        if any(part.strip() for part in parts):
            lines.append("".join(parts))
    return _tidy("\n".join(lines)), _refs(*refs)


def _texts(value: Any, depth: int = 0) -> Iterable[str]:
    """Readable strings anywhere in a card or other structured content, down to a depth no card
    reaches (the recursion stays far from Python's limit whatever the nesting)."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str):
                if key in _TEXT_KEYS and item.strip():
                    yield item
            else:
                yield from _texts(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item, depth + 1)


def _refs(*items: tuple[str, str | None, str | None]) -> tuple[AttachmentRef, ...]:
    return tuple(AttachmentRef(kind=kind, key=key, name=name) for kind, key, name in items if key)


def _tidy(text: str) -> str:
    """Collapse the runs of spaces a removed mention leaves, line by line."""
    lines = text.splitlines()
    if len(lines) == 1:  # most messages
        return _SPACES.sub(" ", lines[0]).strip()
    return "\n".join(_SPACES.sub(" ", line).strip() for line in lines).strip()


def _content(raw: str | dict[str, Any] | None) -> dict[str, Any]:
    """``message.content`` is a JSON-encoded string."""
    if raw is None or isinstance(raw, dict):
        return raw or {}
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {"text": raw}
    except RecursionError:
        raise Rejected(400, "malformed body", "content is nested too deep") from None
    if not isinstance(value, dict):
        raise Rejected(400, "malformed body", "content is not a JSON object")
    return value


# ---------------------------------------------------------------------------------- schema 1.0


def _legacy_event(payload: dict[str, Any], ctx: Context) -> Result:
    uuid = _required(payload, "uuid")
    event = _obj(payload, "event")
    event_type = _str(event, "type") or "unknown"
    occurred = _from_seconds(payload, "ts")
    if event_type == "message" and _str(event, "open_message_id"):
        return _legacy_message(event, uuid, ctx)
    if event_type in ("add_bot", "remove_bot") and _str(event, "open_chat_id"):
        chat_id = _required(event, "open_chat_id")
        operator = _sender(
            {
                "open_id": event.get("operator_open_id"),
                "user_id": event.get("operator_employee_id"),
            },
            name=_str(event, "operator_name") or "",
        )
        membership = BotMembershipChanged(
            platform="feishu",
            app=ctx.app,
            tenant=ctx.tenant,
            chat_id=chat_id,
            change="added" if event_type == "add_bot" else "removed",
            platform_event_id=uuid,
            operator=operator,
            chat_name=_str(event, "chat_name"),
            occurred_at=occurred,
        )
        return Result(membership, uuid, chat_id)
    return _kept_as_is(ctx, event_type, uuid, event, occurred)


def _legacy_message(event: dict[str, Any], uuid: str, ctx: Context) -> Result:
    message_id = _required(event, "open_message_id")
    chat_id = _str(event, "open_chat_id") or _required(event, "open_id")
    sender = _sender(event)
    if sender is None:
        raise Rejected(400, "malformed body", "message without a sender id")
    kind = _str(event, "msg_type") or "unknown"
    mentions_bot = bool(event.get("is_mention"))
    text = _str(event, "text_without_at_bot") if mentions_bot else None
    message = MessageReceived(
        platform="feishu",
        app=ctx.app,
        tenant=ctx.tenant,
        chat_id=chat_id,
        chat_kind="p2p" if event.get("chat_type") == "private" else "group",
        sender=sender,
        platform_event_id=uuid,
        platform_message_id=message_id,
        reply_handle=ReplyHandle(
            kind=REPLY_HANDLE_FEISHU_MESSAGE, message_id=message_id, chat_id=chat_id
        ),
        text=_tidy(text if text is not None else _str(event, "text") or ""),
        message_kind=kind,
        mentions_bot=mentions_bot,
        attachments=_refs(("image", _str(event, "image_key"), None)),
        root_id=_str(event, "root_id"),
        parent_id=_str(event, "parent_id"),
        raw_event_type="message",
    )
    return Result(message, message_id, chat_id)


# ---------------------------------------------------------------------------------- helpers


def _sender(ids: dict[str, Any], name: str = "") -> Sender | None:
    open_id, union_id = _str(ids, "open_id"), _str(ids, "union_id")
    user_id = _str(ids, "user_id") or _str(ids, "employee_id")
    primary = open_id or union_id or user_id
    if primary is None:
        return None
    return Sender(id=primary, name=name, open_id=open_id, union_id=union_id, user_id=user_id)


def _chat_kind(chat_type: str | None) -> ChatKind:
    return "p2p" if chat_type == "p2p" else "group"


def _typed(container: dict[str, Any], key: str, kind: type[_T] | tuple[type, ...]) -> _T | None:
    """``container[key]`` if it has the expected type, None when absent or null. Any other type
    is refused here, where the field is named (400): code further on may then trust the type
    (fuzzing found a number where a post's paragraphs belong; DingTalk's `atUsers` likewise)."""
    value = container.get(key)
    if value is None:
        return None
    if isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
        return value  # type: ignore[return-value]
    raise Rejected(400, "malformed body", f"{key} is a {type(value).__name__}")


def _obj(container: dict[str, Any], key: str) -> dict[str, Any]:
    return _typed(container, key, dict) or {}


def _str(container: dict[str, Any], key: str) -> str | None:
    return _typed(container, key, str) or None


def _required(container: dict[str, Any], key: str) -> str:
    value = _str(container, key)
    if value is None:
        raise Rejected(400, "malformed body", f"missing {key}")
    return value


def _from_millis(container: dict[str, Any], key: str) -> datetime | None:
    """Epoch milliseconds (digits in a string, as Feishu sends them, or a number)."""
    value = _typed(container, key, (str, int, float))
    try:
        return None if value is None else datetime.fromtimestamp(int(value) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        raise Rejected(400, "malformed body", f"{key} is not a time in ms") from None


def _from_seconds(container: dict[str, Any], key: str) -> datetime | None:
    """Epoch seconds with a fraction (schema 1.0's ``ts``)."""
    value = _typed(container, key, (str, int, float))
    try:
        return None if value is None else datetime.fromtimestamp(float(value), UTC)
    except (ValueError, OverflowError, OSError):
        raise Rejected(400, "malformed body", f"{key} is not a time in seconds") from None


def _kept_as_is(
    ctx: Context,
    event_type: str,
    event_id: str,
    event: dict[str, Any],
    occurred: datetime | None,
) -> Result:
    """Any event we do not model: kept whole, so event-triggered rules can still match it."""
    return Result(
        PlatformEventReceived(
            platform="feishu",
            app=ctx.app,
            tenant=ctx.tenant,
            event_type=event_type,
            platform_event_id=event_id,
            payload=event,
            occurred_at=occurred,
        ),
        event_id,
    )
