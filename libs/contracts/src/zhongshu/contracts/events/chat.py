"""Chat events: what users say to the bots, what the hub answers, and how the answer went."""

from typing import Any, ClassVar, Final, Literal

import msgspec

from zhongshu.contracts.events.base import AwareDatetime, Event

Platform = Literal["dingtalk", "feishu"]
ChatKind = Literal["p2p", "group"]
ReplyKind = Literal["text", "markdown", "card"]
DeliveryStatus = Literal["delivered", "failed", "ambiguous"]
"""The `<status>` token of `delivery.<status>.<platform>.<tenant>`."""

# Open sets: readers must accept values not listed here (platforms add message kinds).
MESSAGE_KINDS: Final = frozenset(
    {
        "text",
        "post",
        "rich_text",
        "markdown",
        "image",
        "file",
        "audio",
        "video",
        "sticker",
        "interactive",
        "merge_forward",
        "share_chat",
        "share_user",
        "location",
        "system",
        "unknown",
    }
)
"""Known values of `MessageReceived.message_kind` (Feishu `message_type`, DingTalk `msgtype`)."""

REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK: Final = "dingtalk_session_webhook"
"""Reply through the per-conversation `sessionWebhook` DingTalk sends with a message (`url`,
`expires_at`)."""
REPLY_HANDLE_DINGTALK_ROBOT: Final = "dingtalk_robot"
"""Send through the DingTalk robot OpenAPI to `chat_id` (after the session webhook expired)."""
REPLY_HANDLE_FEISHU_MESSAGE: Final = "feishu_message"
"""Reply to Feishu message `message_id` in `chat_id`."""
REPLY_HANDLE_FEISHU_CHAT: Final = "feishu_chat"
"""Send a new Feishu message to `chat_id`."""
REPLY_HANDLE_FEISHU_CARD_UPDATE: Final = "feishu_card_update"
"""Replace the interactive card of Feishu message `message_id` (in `chat_id`) instead of sending
a new message: for a reply of kind `card` to a `CardActionReceived` (its `message_id`). The card
must declare `config.update_multi: true`, like the one it replaces; the message must be an
interactive card the app sent within the last 14 days. Replies of other kinds are threaded
under that message instead."""


class Sender(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Who sent a message or clicked a card; `id` is the platform's primary user id for the app
    (Feishu `open_id`, DingTalk `senderStaffId` or else `senderId`)."""

    id: str
    name: str = ""
    open_id: str | None = None
    union_id: str | None = None
    user_id: str | None = None
    staff_id: str | None = None


class Mention(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One @-mention in a message; `is_bot_self` when it names the receiving bot."""

    id: str
    name: str = ""
    is_bot_self: bool = False


class AttachmentRef(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A file, image or audio clip kept on the platform; `key` fetches it (Feishu `file_key` or
    `image_key`, DingTalk `downloadCode`). The bytes never travel on the bus."""

    kind: str
    key: str
    name: str | None = None
    size: int | None = None
    mime_type: str | None = None


class ReplyHandle(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How to answer in place: which fields are set depends on `kind` (`REPLY_HANDLE_*`)."""

    kind: str
    url: str | None = None
    message_id: str | None = None
    chat_id: str | None = None
    expires_at: AwareDatetime | None = None
    chat_kind: ChatKind | None = None
    """One-to-one or group, when the producer knows: DingTalk's robot OpenAPI has a different
    call for each, and a one-to-one `chat_id` looks like a group's (`cid…`)."""
    user_id: str | None = None
    """Whom to address in a one-to-one chat (DingTalk: the sender's `senderStaffId`, which
    `oToMessages/batchSend` needs once the `sessionWebhook` expired, and AI cards always)."""


class MessageReceived(Event, frozen=True, kw_only=True, omit_defaults=True):
    """A user sent a message the bot can see, normalized from DingTalk or Feishu.

    Published by ingress-dingtalk and ingress-feishu on `chat.inbound.<platform>.<tenant>` after
    the signature check and dedupe, with `Nats-Msg-Id` derived from `platform_event_id`.
    Consumed by the router; recorded by the projector.
    """

    TYPE: ClassVar[str] = "zhongshu.chat.message_received.v1"

    platform: Platform
    app: str
    """The configured app (`apps.<name>` in zhongshu.yaml) that received it."""
    tenant: str
    chat_id: str
    chat_kind: ChatKind
    sender: Sender
    platform_event_id: str
    """The platform's id for the delivery (Feishu `header.event_id`, DingTalk `msgId`): the
    dedupe key, since a platform retry repeats it."""
    platform_message_id: str
    reply_handle: ReplyHandle
    text: str = ""
    """Plain text with mentions of the bot removed; empty for non-text messages."""
    message_kind: str = "text"
    """One of `MESSAGE_KINDS`, or a newer platform kind."""
    mentions: tuple[Mention, ...] = ()
    mentions_bot: bool = False
    attachments: tuple[AttachmentRef, ...] = ()
    thread_id: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    sent_at: AwareDatetime | None = None
    """When the platform says the user sent it."""
    raw_event_type: str | None = None
    """The platform's own event type (e.g. `im.message.receive_v1`), for debugging."""


class CardActionReceived(Event, frozen=True, kw_only=True, omit_defaults=True):
    """A user clicked a button or submitted a form on an interactive card the bot sent.

    Published by ingress-feishu (card callbacks) and ingress-dingtalk on
    `chat.inbound.<platform>.<tenant>`; consumed by the router.
    """

    TYPE: ClassVar[str] = "zhongshu.chat.card_action_received.v1"

    platform: Platform
    app: str
    tenant: str
    chat_id: str
    user: Sender
    action: dict[str, Any]
    """The `value` the card attached to the clicked component."""
    platform_event_id: str
    reply_handle: ReplyHandle
    action_tag: str | None = None
    """Component kind, e.g. `button`, `select_static`, `form`."""
    action_name: str | None = None
    option: str | None = None
    """Selected option of a select component."""
    form_value: dict[str, Any] | None = None
    message_id: str | None = None
    """The platform message holding the card."""
    card_id: str | None = None
    token: str | None = None
    """Feishu's card update token (valid 30 minutes, for at most two updates)."""
    chat_kind: ChatKind | None = None


class BotMembershipChanged(Event, frozen=True, kw_only=True, omit_defaults=True):
    """The bot was added to or removed from a chat (Feishu `im.chat.member.bot.added_v1` /
    `deleted_v1`, DingTalk's equivalent events).

    Published by ingress on `chat.inbound.<platform>.<tenant>`; the router may greet or forget.
    """

    TYPE: ClassVar[str] = "zhongshu.chat.bot_membership_changed.v1"

    platform: Platform
    app: str
    tenant: str
    chat_id: str
    change: str
    """`added` or `removed`."""
    platform_event_id: str
    operator: Sender | None = None
    chat_name: str | None = None
    occurred_at: AwareDatetime | None = None


class PlatformEventReceived(Event, frozen=True, kw_only=True, omit_defaults=True):
    """Any other platform event, kept whole so event-triggered rules can match it later
    (an unknown event type is never an error).

    Published by ingress on `chat.inbound.<platform>.<tenant>`.
    """

    TYPE: ClassVar[str] = "zhongshu.chat.platform_event_received.v1"

    platform: Platform
    app: str
    tenant: str
    event_type: str
    """The platform's own event type, e.g. `contact.user.created_v3`."""
    platform_event_id: str
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    """The platform's event body (decrypted), as received."""
    occurred_at: AwareDatetime | None = None


class CommandRequested(Event, frozen=True, kw_only=True, omit_defaults=True):
    """The router accepted a command for the agent (e.g. `/summarize 3d`, or a card button).

    Exactly one of `message` and `card_action` is set: the inbound event, so the agent can
    answer in place. Published by the router on `chat.command.<platform>.<tenant>` after the
    whitelist and rate limits; consumed by the agent.
    """

    TYPE: ClassVar[str] = "zhongshu.chat.command_requested.v1"

    command: str
    """The command name without its prefix, lower-case (`summarize`)."""
    args: tuple[str, ...] = ()
    text: str = ""
    """The text after the command name, unsplit."""
    message: MessageReceived | None = None
    card_action: CardActionReceived | None = None
    sender_roles: tuple[str, ...] = ()
    """Roles the router granted the sender from the app's access rules (e.g. `admin`)."""

    def __post_init__(self) -> None:
        if (self.message is None) == (self.card_action is None):
            raise ValueError("exactly one of `message` and `card_action` must be set")

    @property
    def origin(self) -> MessageReceived | CardActionReceived:
        """The inbound event this command came from."""
        origin = self.message or self.card_action
        assert origin is not None  # guaranteed by __post_init__
        return origin


class QueryRequested(Event, frozen=True, kw_only=True, omit_defaults=True):
    """The router classified a message as a free-form question (no command) to be answered.

    Published by the router on `chat.query.<platform>.<tenant>`.
    """

    TYPE: ClassVar[str] = "zhongshu.chat.query_requested.v1"

    message: MessageReceived
    text: str = ""
    """The question, with the bot mention and any prefix removed."""
    sender_roles: tuple[str, ...] = ()


class ReplyGenerated(Event, frozen=True, kw_only=True, omit_defaults=True):
    """Something must be said in a chat: an answer, a streamed chunk of one, or a notice.

    A streamed reply is a sequence of events with the same `reply_id` and `stream_id` and
    increasing `chunk_index`, ending with one that has `final=True`; each chunk's `text` is the
    whole text so far, so the notifier may skip to the newest chunk. A reply that is not
    streamed is one event with `chunk_index=0, final=True`.

    Published by the agent (and the router for direct replies) on
    `chat.reply.<platform>.<tenant>` with `Nats-Msg-Id` `derive_msg_id(parent, "reply.<n>")`;
    consumed by the notifier, which sends it at most once.
    """

    TYPE: ClassVar[str] = "zhongshu.chat.reply_generated.v1"

    reply_id: str
    """Identifies the reply (not the chunk); Feishu sends carry it as the request `uuid`."""
    platform: Platform
    app: str
    tenant: str
    chat_id: str
    in_reply_to: str | None = None
    """Envelope id of the event being answered; None for unsolicited messages."""
    reply_handle: ReplyHandle | None = None
    """Answer in place with this; None sends a new message to `chat_id`."""
    kind: ReplyKind = "text"
    text: str = ""
    title: str | None = None
    """Title of a markdown message (DingTalk shows it in notifications)."""
    card: dict[str, Any] | None = None
    """The platform's card JSON when `kind == "card"`."""
    mention_user_ids: tuple[str, ...] = ()
    chunk_index: int = 0
    final: bool = True
    stream_id: str | None = None
    """Set on every chunk of a streamed reply; the notifier keys its streaming card on it."""


class ReplyDelivered(Event, frozen=True, kw_only=True, omit_defaults=True):
    """The platform accepted a reply (or one chunk of it).

    Published by the notifier on `delivery.delivered.<platform>.<tenant>`; read by the
    projector.
    """

    TYPE: ClassVar[str] = "zhongshu.chat.reply_delivered.v1"

    reply_id: str
    platform: Platform
    delivered_at: AwareDatetime
    platform_message_id: str | None = None
    attempts: int = 1
    chunk_index: int = 0
    app: str = ""
    chat_id: str = ""


class ReplyDeliveryFailed(Event, frozen=True, kw_only=True, omit_defaults=True):
    """A reply could not be delivered, or it is unknown whether it was.

    `ambiguous` means the send may have reached the user (e.g. a DingTalk call that timed out
    after the request left): it is recorded, counted and audited but never resent. Published
    by the notifier on `delivery.failed.<platform>.<tenant>` or
    `delivery.ambiguous.<platform>.<tenant>`; read by the projector.
    """

    TYPE: ClassVar[str] = "zhongshu.chat.reply_delivery_failed.v1"

    reply_id: str
    platform: Platform
    reason: str
    code: str | None = None
    """The platform's error code, if it gave one."""
    retryable: bool = False
    ambiguous: bool = False
    attempts: int = 1
    chunk_index: int = 0
    app: str = ""
    chat_id: str = ""
