"""Every event zhongshu puts on the bus, and `EVENT_TYPES`, the registry readers decode by."""

from typing import Final

from zhongshu.contracts.events.alerts import AlertLevel, AlertRaised
from zhongshu.contracts.events.audit import (
    OUTCOME_AMBIGUOUS,
    OUTCOME_DENIED,
    OUTCOME_FAILED,
    OUTCOME_SUCCEEDED,
    AuditRecorded,
)
from zhongshu.contracts.events.base import AwareDatetime, Event
from zhongshu.contracts.events.callbacks import CallbackDelivered, CallbackDeliveryFailed
from zhongshu.contracts.events.chat import (
    MESSAGE_KINDS,
    REPLY_HANDLE_DINGTALK_ROBOT,
    REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK,
    REPLY_HANDLE_FEISHU_CHAT,
    REPLY_HANDLE_FEISHU_MESSAGE,
    AttachmentRef,
    BotMembershipChanged,
    CardActionReceived,
    ChatKind,
    CommandRequested,
    DeliveryStatus,
    Mention,
    MessageReceived,
    Platform,
    PlatformEventReceived,
    QueryRequested,
    ReplyDelivered,
    ReplyDeliveryFailed,
    ReplyGenerated,
    ReplyHandle,
    ReplyKind,
    Sender,
)
from zhongshu.contracts.events.tasks import (
    DELIVERY_TARGET_CALLBACK,
    DELIVERY_TARGET_CHAT,
    DeliveryTarget,
    TaskCompleted,
    TaskFailed,
    TaskOrigin,
    TaskProgressed,
    TaskRequested,
    TaskStarted,
    TaskToolCalled,
    WorkflowRef,
)
from zhongshu.contracts.events.workflows import (
    RunCompleted,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepKind,
    StepRequested,
    StepStarted,
)

ALL_EVENTS: Final[tuple[type[Event], ...]] = (
    MessageReceived,
    CardActionReceived,
    BotMembershipChanged,
    PlatformEventReceived,
    CommandRequested,
    QueryRequested,
    ReplyGenerated,
    ReplyDelivered,
    ReplyDeliveryFailed,
    AlertRaised,
    TaskRequested,
    TaskStarted,
    TaskProgressed,
    TaskToolCalled,
    TaskCompleted,
    TaskFailed,
    AuditRecorded,
    RunStarted,
    StepRequested,
    StepStarted,
    StepCompleted,
    StepFailed,
    RunCompleted,
    RunFailed,
    CallbackDelivered,
    CallbackDeliveryFailed,
)


def _registry(classes: tuple[type[Event], ...]) -> dict[str, type[Event]]:
    registry: dict[str, type[Event]] = {}
    for cls in classes:
        if cls.TYPE in registry:
            raise RuntimeError(f"{cls.__name__} and {registry[cls.TYPE].__name__} share {cls.TYPE}")
        registry[cls.TYPE] = cls
    return registry


EVENT_TYPES: Final[dict[str, type[Event]]] = _registry(ALL_EVENTS)
"""CloudEvents `type` -> event class, for every event zhongshu defines."""

__all__ = [
    "ALL_EVENTS",
    "DELIVERY_TARGET_CALLBACK",
    "DELIVERY_TARGET_CHAT",
    "EVENT_TYPES",
    "MESSAGE_KINDS",
    "OUTCOME_AMBIGUOUS",
    "OUTCOME_DENIED",
    "OUTCOME_FAILED",
    "OUTCOME_SUCCEEDED",
    "REPLY_HANDLE_DINGTALK_ROBOT",
    "REPLY_HANDLE_DINGTALK_SESSION_WEBHOOK",
    "REPLY_HANDLE_FEISHU_CHAT",
    "REPLY_HANDLE_FEISHU_MESSAGE",
    "AlertLevel",
    "AlertRaised",
    "AttachmentRef",
    "AuditRecorded",
    "AwareDatetime",
    "BotMembershipChanged",
    "CallbackDelivered",
    "CallbackDeliveryFailed",
    "CardActionReceived",
    "ChatKind",
    "CommandRequested",
    "DeliveryStatus",
    "DeliveryTarget",
    "Event",
    "Mention",
    "MessageReceived",
    "Platform",
    "PlatformEventReceived",
    "QueryRequested",
    "ReplyDelivered",
    "ReplyDeliveryFailed",
    "ReplyGenerated",
    "ReplyHandle",
    "ReplyKind",
    "RunCompleted",
    "RunFailed",
    "RunStarted",
    "Sender",
    "StepCompleted",
    "StepFailed",
    "StepKind",
    "StepRequested",
    "StepStarted",
    "TaskCompleted",
    "TaskFailed",
    "TaskOrigin",
    "TaskProgressed",
    "TaskRequested",
    "TaskStarted",
    "TaskToolCalled",
    "WorkflowRef",
]
